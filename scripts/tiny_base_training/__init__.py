"""Training code of the tiny base model (scripts/train_tiny_base.py): synthetic scenes, VAE stage, transformer stage."""
