"""Tiny dataset and config writers shared by the trainer tests (no tests of its own)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from ufo_video.media_write import write_video


def make_dataset(root: Path, images: int = 4, videos: int = 2) -> Path:
    """32x32 random images and 9-frame mp4s with captions, in the guide's layout."""
    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True, exist_ok=True)
    meta = []
    for i in range(images):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "train" / f"img{i}.png")
        meta.append({"file_path": f"train/img{i}.png", "text": f"picture {i}", "type": "image"})
    for i in range(videos):
        write_video(rng.integers(0, 255, (9, 32, 32, 3), dtype=np.uint8), root / "train" / f"vid{i}.mp4", fps=8)
        meta.append({"file_path": f"train/vid{i}.mp4", "text": f"video {i}", "type": "video"})
    (root / "metadata.json").write_text(json.dumps(meta))
    return root


def write_config(path: Path, model: Path, data: Path, out: Path, **train) -> Path:
    """A tiny CPU training config (fp32, rank 4, 32x32x5 clips, batch 2, 4 steps)."""
    settings = dict(output_dir=str(out), train_batch_size=2, max_train_steps=4, checkpointing_steps=2,
                    mixed_precision="no", gradient_checkpointing=False, save_state=True, report_to="none")  # fmt: skip
    settings.update(train)
    lines = [
        "[model]", f'pretrained_model_name_or_path = "{model}"', 'weight_dtype = "fp32"', 'device = "cpu"',
        "[data]", f'train_data_dir = "{data}"', f'train_data_meta = "{data / "metadata.json"}"',
        "image_sample_size = 32", "video_sample_size = 32", "token_sample_size = 32", "video_sample_n_frames = 5",
        "enable_bucket = false", "dataloader_num_workers = 0",
        "[lora]", "rank = 4", "network_alpha = 4",
        "[train]", *(f"{k} = {json.dumps(v)}" for k, v in settings.items()),
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (out / "losses.jsonl").read_text().splitlines())]


def lora(path: Path) -> dict:
    return load_file(str(path))


def metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def own_memory(pipe):
    """`pipe` with every tensor of its modules copied into memory of its own, in place. diffusers'
    `from_pretrained` leaves weights as views into the mmap'd safetensors file, 8-byte aligned in the
    tiny files; MKL on some CPUs (AMD EPYC) picks a batch-1 product's summation order by alignment, so
    an exact comparison with ufo-video (whose loader aligns) needs the same layout. No value changes."""
    import torch

    with torch.no_grad():
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                for tensor in [*component.parameters(), *component.buffers()]:
                    tensor.data = tensor.data.clone(memory_format=torch.contiguous_format)
    return pipe
