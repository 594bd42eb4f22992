"""`ufo-video sweep`: one LoRA at several weights, same prompt and seed, side by side.

Answers "what does my UFO do, and at which alpha?" (peers' users keep asking whether a LoRA
does anything at all). The LoRA is attached once, unfused, and only its weight changes between
videos; each video gets its own file and sidecar, plus one grid video with the weights written
above each column and a `sweep.json` listing everything.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ufo_video.errors import UfoError
from ufo_video.atomic import write_json_atomic
from ufo_video.infer.outputs import write_output, write_video_and_sidecar
from ufo_video.infer.run import Log
from ufo_video.infer.settings import GenerationSettings, LoraSpec, VideoRequest

LABEL_HEIGHT = 14
GAP = 2


def parse_weights(text: str) -> list[float]:
    try:
        weights = [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise UfoError(f"--weights {text!r}: give numbers separated by commas, e.g. 0,0.05,0.1,0.2") from None
    if not weights:
        raise UfoError("--weights is empty; give numbers separated by commas, e.g. 0,0.05,0.1,0.2")
    if len(set(weights)) != len(weights):
        raise UfoError(f"--weights {text!r} repeats a weight")
    return weights


def weight_name(weight: float) -> str:
    return f"alpha_{float(weight)}"


def label_grid(columns: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """Videos [F, H, W, 3] side by side, each under a band with its label (Pillow's default font)."""
    from PIL import Image, ImageDraw, ImageFont

    frames, height, width = columns[0].shape[:3]
    font = ImageFont.load_default()
    total_w = len(columns) * width + (len(columns) - 1) * GAP
    band = Image.new("RGB", (total_w, LABEL_HEIGHT), (0, 0, 0))
    draw = ImageDraw.Draw(band)
    for i, text in enumerate(labels):
        draw.text((i * (width + GAP) + 2, 1), text, fill=(255, 255, 255), font=font)
    grid = np.zeros((frames, LABEL_HEIGHT + height, total_w, 3), dtype=np.uint8)
    grid[:, :LABEL_HEIGHT] = np.asarray(band)[None]
    for i, col in enumerate(columns):
        x = i * (width + GAP)
        grid[:, LABEL_HEIGHT:, x : x + width] = col
    return grid


def run_sweep(
    settings: GenerationSettings,
    request: VideoRequest,
    lora: LoraSpec,
    weights: list[float],
    out_dir: Path,
    fmt: str,
    log: Log = print,
) -> Path:
    """Write one video per weight, a labelled grid and sweep.json into `out_dir`; returns sweep.json."""
    from ufo_video.infer.engine import VideoGenerator

    if settings.fuse:
        raise UfoError("sweep changes the LoRA weight between videos, which a fused LoRA cannot do; drop --fuse")
    if not request.prompt.strip():
        raise UfoError("the prompt is empty; give --prompt TEXT")
    settings = replace(settings, loras=(replace(lora, weight=weights[0]),))
    gen = VideoGenerator(settings, log=log)
    entries, columns = [], []
    for weight in weights:
        gen.set_lora_weights([weight])
        frames = gen.generate(request)
        run_settings = replace(settings, loras=(replace(lora, weight=weight),))
        name = weight_name(weight)
        path = out_dir / (name if fmt == "png" else f"{name}.{fmt}")
        out, side = write_video_and_sidecar(frames, path, fmt, run_settings, request)
        log(f"weight {weight:g}: wrote {out}")
        entries.append({"weight": weight, "file": out.name, "sidecar": side.name})
        columns.append(frames)
    grid_path = out_dir / ("grid" if fmt == "png" else f"grid.{fmt}")
    write_output(label_grid(columns, [f"a={w:g}" for w in weights]), grid_path, fmt, settings.fps)
    log(f"wrote {grid_path} (weights left to right: {', '.join(f'{w:g}' for w in weights)})")
    record = {
        "lora": str(Path(lora.path).resolve()),
        "weights": weights,
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "seed": request.seed,
        "videos": entries,
        "grid": grid_path.name,
    }
    return write_json_atomic(out_dir / "sweep.json", record)
