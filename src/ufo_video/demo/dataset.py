"""A small synthetic dataset in the guide's layout: PNG images and short mp4 videos of coloured
shapes moving over textured backgrounds, with captions and a metadata.json.

The scenes and captions come from `ufo_video.scenes`, the data the
shipped tiny base model was trained on, so the UFO LoRA learns "keep still" on pictures the base
model can draw, and the captions are in its vocabulary. Images are a scene's first frame;
videos are whole scenes (the trainer takes their middle frame for static clips).

One entry is deliberately broken (an "mp4" that is not a video), so the data check has something
to report. The demo trains only on the entries the check passed (`training_metadata`): that is
what a user should do with a real dataset, and it keeps the run inside the trainer's
`data.max_failed_fraction` budget instead of leaning on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ufo_video.atomic import write_text_atomic
from ufo_video.demo.plan import DemoPlan, Prompt
from ufo_video.media_write import write_video
from ufo_video import scenes

BROKEN_FILE = "videos/broken.mp4"


def scene_frames(scene: scenes.Scene, frames: int, size: int) -> np.ndarray:
    """uint8 RGB frames [F, size, size, 3] of a scene (its renderer gives [-1, 1] [3, F, H, W])."""
    clip = scenes.render(scene, frames, size)
    return np.clip((clip.transpose(1, 2, 3, 0) + 1.0) * 127.5, 0, 255).round().astype(np.uint8)


def start_image(prompt: Prompt, size: int, path: Path) -> Path:
    """The i2v start frame for a prompt: frame 0 of its scene (not a training image, so i2v is
    not a memory test)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(scene_frames(prompt.scene, 1, size)[0]).save(path)
    return path


def make_dataset(root: Path, plan: DemoPlan) -> dict:
    """Write images, videos, the broken file and metadata.json under `root`; returns a summary
    {"root", "metadata", "images", "videos", "broken"}."""
    rng = np.random.default_rng(plan.seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    size, n = plan.media_size, plan.media_frames
    meta: list[dict] = []
    for i in range(plan.images):
        scene = scenes.sample_scene(rng, n, size)
        name = f"images/{scene.colour}_{scene.shape}_{i}.png"
        Image.fromarray(scene_frames(scene, 1, size)[0]).save(root / name)
        meta.append({"file_path": name, "text": scene.prompt, "type": "image"})
    for i in range(plan.videos):
        scene = scenes.sample_scene(rng, n, size)
        name = f"videos/{scene.colour}_{scene.shape}_{i}.mp4"
        write_video(scene_frames(scene, n, size), root / name, fps=plan.fps, lossless=True)
        meta.append({"file_path": name, "text": scene.prompt, "type": "video"})
    # The deliberately broken entry: right name, wrong bytes (what a truncated download looks like).
    write_text_atomic(root / BROKEN_FILE, "this is not an mp4 file; the demo's data check must report it\n")
    meta.append({"file_path": BROKEN_FILE, "text": "a video that cannot be decoded", "type": "video"})
    metadata = write_text_atomic(root / "metadata.json", json.dumps(meta, indent=1) + "\n")
    return {"root": str(root), "metadata": str(metadata), "images": plan.images, "videos": plan.videos,
            "broken": [BROKEN_FILE]}  # fmt: skip


def training_metadata(metadata: Path, bad_indices: set[int], out: Path) -> tuple[Path, list[dict]]:
    """Copy of `metadata` without the entries the check flagged; returns (path, excluded entries)."""
    entries = json.loads(metadata.read_text(encoding="utf-8"))
    kept = [e for i, e in enumerate(entries) if i not in bad_indices]
    excluded = [e for i, e in enumerate(entries) if i in bad_indices]
    write_text_atomic(out, json.dumps(kept, indent=1) + "\n")
    return out, excluded
