"""Input images, output files and the sidecar JSON written next to every video.

The sidecar records everything needed to make the same video again (`ufo-video generate
--from-sidecar FILE.json`), plus a SHA-256 of the uint8 frames so a reproduction can be checked
for bitwise equality rather than by eye.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ufo_video import __version__
from ufo_video.atomic import DiskFullError, write_json_atomic
from ufo_video.errors import UfoError
from ufo_video.infer.settings import OUTPUT_FORMATS, GenerationSettings, VideoRequest
from ufo_video.media_write import write_png_frames, write_video
from ufo_video.writable import OutputError

SIDECAR_KIND = "ufo-video generation"


def load_image(path: str | Path, what: str = "image"):
    """An RGB PIL image, upright according to its EXIF orientation."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise UfoError(f"{what} not found: {p} (give the path of a PNG or JPEG file)")
    try:
        with Image.open(p) as img:
            return ImageOps.exif_transpose(img).convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise UfoError(f"{what} {p} is not a readable image ({exc})") from None


def frames_sha256(frames: np.ndarray) -> str:
    arr = np.ascontiguousarray(frames, dtype=np.uint8)
    h = hashlib.sha256(str(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def output_format(out: Path | None, fmt: str | None) -> str:
    """The format asked for: --format, else the --out suffix, else mp4; the two must agree."""
    suffix = out.suffix.lower().lstrip(".") if out is not None and out.suffix else None
    if fmt is not None and fmt not in OUTPUT_FORMATS:
        raise UfoError(f"unknown output format {fmt!r}; choose one of: {', '.join(OUTPUT_FORMATS)}")
    if suffix is not None and suffix not in OUTPUT_FORMATS:
        raise UfoError(f"--out {out}: the name must end in .mp4 or .gif (or have no suffix for png frames)")
    if fmt and suffix and fmt != suffix:
        raise UfoError(f"--out {out} ends in .{suffix} but --format is {fmt}; make them agree")
    return fmt or suffix or "mp4"


def next_index_path(folder: Path, fmt: str) -> Path:
    """`folder/NNNNNNNN.<fmt>` numbered after the highest existing number, like the reference's
    predict scripts (which count files; counting would skip numbers once sidecars exist)."""
    numbers = [int(p.stem) for p in folder.glob("*") if re.fullmatch(r"\d{8}", p.stem)] if folder.is_dir() else []
    name = f"{max(numbers, default=0) + 1:08d}"
    return folder / (name if fmt == "png" else f"{name}.{fmt}")


def with_format(path: Path, fmt: str) -> Path:
    return path.with_suffix("") if fmt == "png" else path.with_suffix(f".{fmt}")


def sidecar_path(output: Path) -> Path:
    """`x.mp4` / `x.gif` -> `x.json`; a PNG frame folder -> its whole name + `.json` (a sweep's
    `alpha_0.5` folder must not share `alpha_0.json` with `alpha_0.0`)."""
    return output.with_suffix(".json") if output.suffix in (".mp4", ".gif") else output.with_name(output.name + ".json")


SIDECAR_BYTES = 64 * 1024  # a sidecar is a few kB
RAW_SHARE = {"mp4": 1 / 10, "gif": 1 / 2, "png": 1.0}  # of the raw RGB bytes, generously


def estimated_bytes(settings: GenerationSettings, fmt: str) -> int:
    """Disk one video and its sidecar may take, for the free-space check before the model loads.
    Deliberately simple and generous: the raw RGB frames (frames x height x width x 3 bytes) times
    1/10 for mp4 (H.264 at crf 18 is usually 1/50 or less), 1/2 for gif (one palette byte per
    pixel, LZW-packed), all of it for PNG frames (plus 1 KiB of headers per frame), plus 64 KiB for
    the sidecar. It only has to catch a disk that plainly cannot hold the result; a disk that fills
    up anyway fails the write with one line (`atomic.DiskFullError`)."""
    height, width = settings.sample_size
    frames = settings.video_length
    raw = frames * height * width * 3
    extra = 1024 * frames if fmt == "png" else 0
    return int(raw * RAW_SHARE[fmt]) + extra + SIDECAR_BYTES


def write_output(frames: np.ndarray, path: Path, fmt: str, fps: int, exclusive: bool = False) -> Path:
    """mp4 / gif through the shared writer, or a folder of PNG frames. `exclusive`: an existing
    `path` (even one a concurrent run made meanwhile) is an "already exists" error, never replaced."""
    if fmt == "png":
        write_png_frames(frames, path, exclusive=exclusive)
        return path
    return write_video(frames, path, fps=fps, exclusive=exclusive)


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def sidecar_record(
    settings: GenerationSettings, request: VideoRequest, output: Path, fmt: str, frames: np.ndarray,
    runtime: dict[str, Any] | None = None, routing: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Paths are stored absolute so the sidecar reproduces the video from any working folder.
    `runtime` (CPU threads) is recorded too: results can differ in the last bits with it.
    `routing` (multi-expert models: `VideoGenerator.lora_routing`, which expert got which LoRA at
    which weight) is recorded as "lora_routing" when given."""
    setting_values = settings.to_dict()
    setting_values["model"] = _absolute(settings.model)
    for lora in setting_values["loras"]:
        lora["path"] = _absolute(lora["path"])
    record = {
        "kind": SIDECAR_KIND,
        "ufo_video_version": __version__,
        "output": output.name,
        "format": fmt,
        "frames_sha256": frames_sha256(frames),
        "frames_shape": list(frames.shape),
        "request": {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": request.seed,
            "image": _absolute(request.image),
            "end_image": _absolute(request.end_image),
        },
        "settings": setting_values,
        "runtime": dict(runtime or {}),
    }
    if routing:
        record["lora_routing"] = [dict(r) for r in routing]
    return record


def write_video_and_sidecar(
    frames: np.ndarray, path: Path, fmt: str, settings: GenerationSettings, request: VideoRequest,
    runtime: dict[str, Any] | None = None, exclusive: bool = False, routing: list[dict[str, Any]] | None = None,
) -> tuple[Path, Path]:
    """The video, then its sidecar. `exclusive` (no --overwrite): neither replaces a file; if the
    video was placed but the sidecar name was taken meanwhile (another run), the video is taken
    back out, so no video is ever left next to another run's settings, and the error says so."""
    out = write_output(frames, path, fmt, settings.fps, exclusive=exclusive)
    placed = _identity(out)
    record = sidecar_record(settings, request, out, fmt, frames, runtime, routing)
    try:
        side = write_json_atomic(sidecar_path(out), record, exclusive=exclusive)
    except DiskFullError as exc:
        raise exc.with_context(f"the video {out} is written, its sidecar (the settings that make it again) is not",
                               "run again with --overwrite to write both") from exc.__cause__  # fmt: skip
    except OutputError:
        if not exclusive:
            raise
        if _identity(out) == placed:  # still ours: take it back out
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        raise OutputError(
            f"{sidecar_path(out)} already exists (made by another run while this one worked), so {out} was not "
            "kept either; pass --overwrite to replace them, or choose another name"
        ) from None
    return out, side


def _identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def read_sidecar(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UfoError(f"sidecar not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UfoError(f"{p}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != SIDECAR_KIND:
        raise UfoError(f"{p}: not a ufo-video sidecar (expected \"kind\": \"{SIDECAR_KIND}\")")
    for key in ("request", "settings"):
        if not isinstance(data.get(key), dict):
            raise UfoError(f"{p}: sidecar lacks its '{key}' section")
    return data
