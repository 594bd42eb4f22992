"""ufo-video: train and apply UFO (Uniform Frame Organizer) LoRAs for video diffusion transformers."""

__version__ = "0.1.0"
