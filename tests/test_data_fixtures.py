"""Media factories for the data tests (small files written with PyAV and Pillow). No tests here."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
from PIL import Image

RED = (255, 0, 0)


def write_mp4(path: Path, frames: int = 12, size: tuple[int, int] = (48, 64), color=RED, fps: int = 8,
              moving: bool = False, codec: str = "libx264", faststart: bool = False) -> Path:
    """A video of ``frames`` frames (height, width = size). ``moving``: frame k has a bright bar at
    column 4k so frames differ; otherwise every frame is ``color``."""
    h, w = size
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    fmt = {".mp4": "mp4", ".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".mov": "mov"}[path.suffix]
    with av.open(str(path), mode="w", format=fmt, options=options) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            s.options = {"crf": "10", "preset": "ultrafast"}
        for k in range(frames):
            arr = np.zeros((h, w, 3), np.uint8)
            arr[:] = color
            if moving:
                arr[:, (4 * k) % w : (4 * k) % w + 4] = 255
                arr[0:8, 0:8] = (k * 16) % 256  # frame id patch
            for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_image(path: Path, size=(40, 60), color=RED, mode: str = "RGB") -> Path:
    """Solid ``color`` image (height, width = size)."""
    h, w = size
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (w, h), color).save(path)
    return path


def write_meta(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps(records))
    return path


def make_dataset(root: Path, n_images: int = 4, n_videos: int = 2, **video_kw) -> Path:
    """A root with images (two aspect ratios) and videos plus metadata.json; returns the metadata path."""
    records = []
    for i in range(n_images):
        size = (40, 60) if i % 2 else (64, 32)
        write_image(root / f"img{i}.png", size=size, color=(200, 10 * i, 0))
        records.append({"file_path": f"img{i}.png", "text": f"image {i}", "type": "image"})
    for i in range(n_videos):
        write_mp4(root / f"vid{i}.mp4", **video_kw)
        records.append({"file_path": f"vid{i}.mp4", "text": f"video {i}", "type": "video"})
    return write_meta(root / "metadata.json", records)


def cfg_for(root: Path, meta: Path, **data):
    """A config whose data section points at the test dataset, small sizes, in-process decoding."""
    from ufo_video.config import build_config

    base = {"train_data_dir": str(root), "train_data_meta": str(meta), "image_sample_size": 32,
            "video_sample_size": 32, "token_sample_size": 32, "video_sample_n_frames": 5,
            "dataloader_num_workers": 0, "text_drop_ratio": 0.0}
    base.update(data)
    train = {"train_batch_size": base.pop("train_batch_size", 1)}
    return build_config({"data": base, "train": train})
