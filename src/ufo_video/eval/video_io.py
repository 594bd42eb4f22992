"""A small PyAV reader for the videos `ufo-video eval` scores (mp4, gif, anything FFmpeg opens).

Evaluation must see exactly the pixels the user sees, so every frame is decoded to RGB at its
stored size, in order, with no resizing. Missing or undecodable files raise `UfoError` naming
the file; nothing is ever replaced by blank frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ufo_video.errors import UfoError


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float | None]:
    """Decode the first video stream: (uint8 RGB frames [F, H, W, 3], frames per second or None
    when the container does not say)."""
    import av

    path = Path(path)
    if max_frames is not None and max_frames < 1:
        raise UfoError(f"max_frames must be >= 1, got {max_frames}")
    if not path.is_file():
        raise UfoError(f"{path}: video file not found (check the path)")
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UfoError(f"{path}: no video stream in this file (is it an audio file or an image?)")
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else None
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except av.error.FFmpegError as exc:
        raise UfoError(f"{path}: cannot decode video ({exc}); re-encode it as H.264 mp4 or gif") from exc
    if not frames:
        raise UfoError(f"{path}: the video has no decodable frames")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise UfoError(f"{path}: frames change size within the video ({sorted(shapes)}); re-encode it")
    return np.stack(frames), fps


def read_frames(path: str | Path, max_frames: int | None = None) -> np.ndarray:
    """Decode a video to uint8 RGB frames [F, H, W, 3] (at most `max_frames`)."""
    return read_video(path, max_frames)[0]
