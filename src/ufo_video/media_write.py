"""Writing videos and frames (mp4 H.264 through PyAV, gif, PNG folders), shared by every stage.

Frames are accepted as uint8 [F, H, W, 3] numpy arrays or float tensors in [0, 1] with either
[F, 3, H, W] or [F, H, W, 3] layout. Files are written to a temporary name and renamed, so a
crash never leaves a half-written video under the final name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ufo_video.atomic import DiskFullError, disk_errors, write_atomic, write_dir_exclusive
from ufo_video.errors import UfoError

VIDEO_SUFFIXES = (".mp4", ".gif")


def to_uint8_frames(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Normalise frames to uint8 [F, H, W, 3]."""
    if isinstance(frames, torch.Tensor):
        t = frames.detach().float().cpu()
        if t.ndim != 4:
            raise ValueError(f"expected 4-D frames, got shape {tuple(t.shape)}")
        if t.shape[1] == 3 and t.shape[-1] != 3:
            t = t.permute(0, 2, 3, 1)
        arr = (t.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    else:
        arr = np.asarray(frames)
        if arr.dtype != np.uint8:
            arr = (np.clip(arr.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected frames [F, H, W, 3], got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def write_video(
    frames: np.ndarray | torch.Tensor,
    path: str | Path,
    fps: float = 8,
    *,
    crf: int = 18,
    preset: str = "medium",
    lossless: bool = False,
    exclusive: bool = False,
) -> Path:
    """Write an mp4 (H.264 at `crf`/`preset`, yuv420p, even sizes padded by edge replication) or a gif.

    `lossless=True` encodes with qp 0 instead of `crf`: the decoded pixels are then exactly the
    yuv420p frames, every time. Use it where the file is data that something is computed from (the
    demo's dataset): libx264 via PyAV 18.1 in its lossy mode, even on one thread, sometimes wrote
    different files for the same frames (measured: 1 frame set in 8 gave 2-4 different files over
    8 writes), so training on them was not repeatable.

    `exclusive=True`: an existing `path` is never replaced, not even one a concurrent run created
    while this one encoded (`ufo_video.atomic.place_exclusive`)."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise UfoError(f"{path}: video output must end in {' or '.join(VIDEO_SUFFIXES)}")
    arr = to_uint8_frames(frames)
    if path.suffix.lower() == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in arr]
        def write_gif(tmp: Path) -> None:
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)

        return write_atomic(path, write_gif, exclusive=exclusive)
    return write_atomic(path, lambda tmp: _write_mp4(arr, tmp, fps, crf, preset, lossless), exclusive=exclusive)


def _write_mp4(arr: np.ndarray, tmp: Path, fps: float, crf: int, preset: str, lossless: bool = False) -> None:
    import av

    h, w = arr.shape[1:3]
    ph, pw = h + h % 2, w + w % 2  # yuv420p needs even sides
    if (ph, pw) != (h, w):
        arr = np.pad(arr, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
        stream.options = {"qp": "0", "preset": preset} if lossless else {"crf": str(crf), "preset": preset}
        for frame in arr:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_png_frames(frames: np.ndarray | torch.Tensor, folder: str | Path, exclusive: bool = False) -> list[Path]:
    """Write frames as folder/00000.png, 00001.png, ... `exclusive=True`: the frames are written
    in a temporary folder that is renamed to `folder` only if no other writer made it meanwhile."""
    from PIL import Image

    folder = Path(folder)
    arr = to_uint8_frames(frames)
    names = [f"{i:05d}.png" for i in range(len(arr))]

    def write(target: Path) -> None:
        with disk_errors(target):
            target.mkdir(parents=True, exist_ok=True)
        for i, (name, frame) in enumerate(zip(names, arr)):
            p = target / name
            try:
                with disk_errors(p):
                    Image.fromarray(frame).save(p)
            except DiskFullError as exc:
                p.unlink(missing_ok=True)  # the cut-off frame
                kept = ("nothing was written (the frames go in place only when all are complete)" if exclusive
                        else f"the {i} frame(s) before it are complete in {folder}")  # fmt: skip
                raise exc.with_context(kept, path=folder / name) from exc.__cause__

    if exclusive:
        write_dir_exclusive(folder, write)
    else:
        write(folder)
    return [folder / name for name in names]
