"""LoRA layer: trainable injection (PEFT), file formats (kohya / PEFT), application of several
LoRAs with their own weights, exact fp32 fusing, and the `ufo-video lora` tools.

Public entry points: `add_lora` (inject), `read_lora` / `save_lora` / `write_lora` / `to_kohya` /
`to_peft` (formats), `load_loras` / `set_lora_weights` / `fuse_loras` / `unfuse_loras` /
`remove_loras` (apply). Submodules are imported lazily by callers (`from ufo_video.lora.apply
import load_loras`) so importing the package stays cheap.
"""
