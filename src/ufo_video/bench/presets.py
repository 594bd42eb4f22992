"""Model and data sizes of the bench, and the builders that write them to disk.

"small" is bigger than the test model so that the VAE, the text encoder and attention take a
realistic share of a step (the 12B model cannot run here: random weights are fine for timing,
shapes are what cost time). "smoke" is the tests' tiny size, for CI: it checks that every case
runs, and its numbers mean little.

Everything is built with the first registered family's tiny builder (its adapter's `make_tiny`:
tokenizer, transformer/VAE configs, folder writer) so the bench loads exactly what users load,
through `load_model`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ufo_video.errors import UfoError
from ufo_video.media_write import write_video


@dataclass(frozen=True)
class Preset:
    name: str
    # transformer
    heads: int
    head_dim: int
    layers: int
    time_embed_dim: int
    # VAE
    vae_block_out: tuple[int, ...]
    vae_groups: int
    latent: int
    # text encoder (Qwen2-VL text stack)
    text_hidden: int
    text_layers: int
    # training clip and inference video (height, width, frames)
    train_size: tuple[int, int, int]
    infer_size: tuple[int, int, int]
    infer_steps: int
    lora_rank: int
    # data sets
    loader_videos: int
    loader_video_size: tuple[int, int, int]  # source (height, width, frames)
    loader_images: int
    static_frames: int  # frames of the static clip compared with one frame
    static_side: int
    repeats: int
    notes: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    "small": Preset(
        name="small", heads=4, head_dim=32, layers=4, time_embed_dim=128,
        vae_block_out=(32, 64, 64, 64), vae_groups=8, latent=16, text_hidden=64, text_layers=2,
        train_size=(64, 64, 9), infer_size=(96, 96, 9), infer_steps=8, lora_rank=8,
        loader_videos=8, loader_video_size=(128, 128, 17), loader_images=16,
        static_frames=49, static_side=512, repeats=5,
    ),
    "smoke": Preset(
        name="smoke", heads=2, head_dim=16, layers=2, time_embed_dim=8,
        vae_block_out=(8, 8, 8, 8), vae_groups=2, latent=4, text_hidden=16, text_layers=2,
        train_size=(32, 32, 5), infer_size=(32, 32, 5), infer_steps=2, lora_rank=4,
        loader_videos=2, loader_video_size=(32, 32, 5), loader_images=2,
        static_frames=9, static_side=64, repeats=1,
    ),
}  # fmt: skip


MODEL_SIZE_FIELDS = ("heads", "head_dim", "layers", "time_embed_dim", "latent", "vae_block_out", "vae_groups",
                     "text_hidden", "text_layers")


def write_model(preset: Preset, out: Path, seed: int = 0) -> Path:
    """A random model folder of the preset's size: the first registered family's tiny builder
    (the family the CPU bench's presets are sized for), its default (first) variant and layout."""
    from ufo_video.models.registry import ADAPTERS

    family = next(iter(ADAPTERS.values()))
    choices = family.tiny_choices()
    sizes = {name: getattr(preset, name) for name in MODEL_SIZE_FIELDS}
    return family.make_tiny(out, layout=choices["layout"][0], variant=choices["variant"][0], seed=seed, sizes=sizes)


def _write_mp4(path: Path, frames: np.ndarray, fps: int = 8) -> None:
    """Near-lossless H.264 (crf 10) so decoding costs what real footage costs, not a flat colour."""
    write_video(frames, path, fps=fps, crf=10, preset="ultrafast")


def _textured(rng: np.random.Generator, h: int, w: int, frames: int) -> np.ndarray:
    """Smooth moving texture plus noise: compresses like footage (neither flat nor pure noise)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((frames, h, w, 3), np.uint8)
    phase = rng.uniform(0, 6.28, 3)
    for k in range(frames):
        for c in range(3):
            wave = np.sin((x + 3 * k) / (7 + 3 * c) + phase[c]) * np.cos((y - 2 * k) / (9 + c) + phase[c])
            out[k, :, :, c] = np.clip(127 + 100 * wave + rng.normal(0, 12, (h, w)), 0, 255)
    return out


def write_dataset(root: Path, *, videos: int = 0, video_size: tuple[int, int, int] = (64, 64, 9),
                  images: int = 0, image_side: int = 64, seed: int = 0) -> Path:
    """mp4s and PNGs with captions in the guide's layout; returns the metadata path."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    meta = []
    for i in range(videos):
        h, w, f = video_size
        _write_mp4(root / f"clip{i}.mp4", _textured(rng, h, w, f))
        meta.append({"file_path": f"clip{i}.mp4", "text": f"a moving pattern number {i}", "type": "video"})
    for i in range(images):
        Image.fromarray(_textured(rng, image_side, image_side, 1)[0]).save(root / f"img{i}.png")
        meta.append({"file_path": f"img{i}.png", "text": f"a still pattern number {i}", "type": "image"})
    if not meta:
        raise UfoError("write_dataset: asked for no videos and no images")
    path = root / "metadata.json"
    path.write_text(json.dumps(meta))
    return path
