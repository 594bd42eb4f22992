"""Decoding images (Pillow) and videos (PyAV) into RGB uint8 frames, safely and only as needed.

Why this shape:
- Size caps are checked from headers (image size, container/stream metadata) BEFORE any pixel
  is decoded, so a hostile or accidental 100k x 100k file is refused, not allocated.
- Video frames are converted by FFmpeg straight to ``rgb24``: no channel swap afterwards (the
  reference swapped red and blue for every video sample).
- Images: EXIF orientation applied; CMYK, 16-bit grey, grey, palette and alpha images become
  RGB. Alpha is composited on WHITE (transparent pixels of logos/cut-outs become a white
  background rather than arbitrary colour values hidden under alpha 0). 16-bit values are
  scaled to 8 bits (top byte), not clipped. Pillow's decompression-bomb guard stays on.
- Every function here is pure and picklable-argument only: the loader and ``data check`` run
  them in separate worker processes (see ``workers.py``) so a native crash or hang in a decoder
  costs one sample, not the run.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ufo_video.errors import DataError

EXIF_ORIENTATION = 0x0112


class MediaError(DataError):
    """A media file that cannot be used; ``code`` is a ``data check`` problem code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Limits:
    max_image_pixels: int = 8192 * 8192
    max_video_pixels: int = 4096 * 4096
    max_video_frames: int = 100_000


@dataclass
class MediaInfo:
    """Header facts. ``frames_exact`` is False when the count was estimated from duration x fps."""

    type: str
    width: int
    height: int
    frames: int
    fps: float | None = None
    duration: float | None = None
    frames_exact: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- images


def _open_image(path: Path, limits: Limits):
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise MediaError("missing_file", f"{path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError("too_large", f"{path}: {exc}") from None
    except UnidentifiedImageError:
        raise MediaError("unreadable", f"{path}: not a readable image (unknown or corrupt format)") from None
    except OSError as exc:
        raise MediaError("unreadable", f"{path}: {exc}") from None
    w, h = img.size
    if w * h > limits.max_image_pixels:
        img.close()
        raise MediaError("too_large", f"{path}: {w}x{h} = {w * h} pixels exceeds data.max_image_pixels={limits.max_image_pixels}")
    return img


def probe_image(path: Path, limits: Limits) -> MediaInfo:
    img = _open_image(path, limits)
    with img:
        w, h = img.size
        try:  # PNG may keep EXIF after the pixel data, so this can read the whole file
            orientation = img.getexif().get(EXIF_ORIENTATION)
        except OSError as exc:
            raise MediaError("unreadable", f"{path}: {exc}") from None
        if orientation in (5, 6, 7, 8):  # 90/270 degree rotations swap sides
            w, h = h, w
    return MediaInfo("image", w, h, 1)


def to_rgb(img) -> np.ndarray:
    """Any Pillow image -> uint8 [H, W, 3] RGB (see module doc for the rules)."""
    from PIL import Image

    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.int64)
        arr = (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)  # 16-bit -> top byte
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if mode == "F":
        raise MediaError("unsupported_format", "32-bit float images have no defined 0-255 range; convert to 8/16-bit")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def decode_image(path: Path, limits: Limits) -> np.ndarray:
    """uint8 [H, W, 3] RGB with EXIF orientation applied."""
    from PIL import ImageOps

    img = _open_image(path, limits)
    with img:
        try:
            img.load()
            img = ImageOps.exif_transpose(img)
        except OSError as exc:  # truncated or corrupt pixel data behind a valid header
            raise MediaError("unreadable", f"{path}: {exc}") from None
        return to_rgb(img)


# ----------------------------------------------------------------------------- videos


def _open_video(path: Path):
    import av

    if not path.is_file():
        raise MediaError("missing_file", f"{path} does not exist")
    if path.stat().st_size == 0:
        raise MediaError("unreadable", f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="replace")  # corrupt tags must not fail
    except av.error.FFmpegError as exc:
        raise MediaError("unreadable", f"{path}: cannot open as a video: {exc}") from None
    if not container.streams.video:
        container.close()
        raise MediaError("unsupported_format", f"{path}: no video stream")
    return container


def _video_info(path: Path, container, limits: Limits) -> MediaInfo:
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise MediaError("unreadable", f"{path}: the video stream's codec is unknown or corrupt")
    w, h = stream.codec_context.width, stream.codec_context.height
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else None
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    frames, exact = int(stream.frames or 0), True
    if frames <= 0 and duration and fps:
        frames, exact = int(round(duration * fps)), False
    if w <= 0 or h <= 0:
        raise MediaError("unreadable", f"{path}: the video stream reports no frame size")
    if w * h > limits.max_video_pixels:
        raise MediaError("too_large", f"{path}: {w}x{h} exceeds data.max_video_pixels={limits.max_video_pixels}")
    if frames > limits.max_video_frames:
        raise MediaError("too_large", f"{path}: {frames} frames exceeds data.max_video_frames={limits.max_video_frames}")
    return MediaInfo("video", w, h, frames, fps, duration, exact)


def probe_video(path: Path, limits: Limits) -> MediaInfo:
    """Header facts; when the container states no frame count or duration (some webm/avi), the
    video packets are counted by demuxing (no decoding) so planning has a real count."""
    container = _open_video(path)
    with container:
        info = _video_info(path, container, limits)
        if info.frames <= 0:
            n = 0
            try:
                for packet in container.demux(container.streams.video[0]):
                    n += 1 if packet.size else 0
                    if n > limits.max_video_frames:
                        raise MediaError("too_large", f"{path}: more than data.max_video_frames={limits.max_video_frames} frames")
            except _decode_errors() as exc:
                raise MediaError("unreadable", f"{path}: reading packets failed after {n}: {exc}") from None
            if n == 0:
                raise MediaError("zero_frames", f"{path}: the video stream has no frame")
            info.frames, info.frames_exact = n, False
        return info


def _decode_errors():
    import av

    return (av.error.FFmpegError, EOFError)


def _frame_index(frame, stream, start: float, fps: float) -> int:
    return int(round((float(frame.pts * stream.time_base) - start) * fps)) if frame.pts is not None else -1


def decode_video_frame(path: Path, index: int, limits: Limits) -> np.ndarray:
    """One frame (uint8 [H, W, 3] RGB) located by timestamp after a keyframe seek, so the
    middle frame of a long video costs one GOP of decoding, not half the video."""
    container = _open_video(path)
    with container:
        info = _video_info(path, container, limits)
        stream = container.streams.video[0]
        fps = info.fps or 1.0
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        best, best_idx = None, -1
        try:
            if index > 0:
                container.seek(int((start + index / fps) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                idx = _frame_index(frame, stream, start, fps)
                if idx > index and best is not None:
                    break
                best, best_idx = frame, idx
                if idx >= index:
                    break
        except _decode_errors() as exc:
            raise MediaError("unreadable", f"{path}: decoding frame {index} failed: {exc}") from None
        if best is None:
            raise MediaError("zero_frames", f"{path}: no frame could be decoded at index {index}")
        if best_idx < index - 1:  # one frame of timestamp rounding allowed, never an earlier frame
            raise MediaError("unreadable", f"{path}: the video ends near frame {best_idx} although the header "
                             f"promises {info.frames} (truncated?); frame {index} was needed")
        return best.to_ndarray(format="rgb24")


SEEK_MIN_FRAMES = 32  # below this start frame decoding from the beginning costs about one GOP anyway


def _decode_from_start(path: Path, container, stream, wanted: list[int]) -> tuple[dict[int, np.ndarray], int]:
    """Frames by decode ordinal, from the first frame (the exact reference definition), and the
    last ordinal decoded."""
    got: dict[int, np.ndarray] = {}
    want = set(wanted)
    i = -1
    try:
        for i, frame in enumerate(container.decode(stream)):
            if i in want:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= wanted[-1]:
                break
    except _decode_errors() as exc:
        raise MediaError("unreadable", f"{path}: decoding failed after {len(got)} frames: {exc}") from None
    return got, i


def _decode_after_seek(path: Path, container, stream, info: MediaInfo, wanted: list[int]
                       ) -> tuple[dict[int, np.ndarray], int] | None:
    """Frames located by timestamp after a backward keyframe seek to the first wanted frame, so a
    clip at frame 5,000 costs one GOP plus the clip, not 5,000 decodes. None when the stream's
    timestamps cannot place frames (no pts, or the seek landed after the first wanted frame):
    the caller then decodes from the start."""
    fps = info.fps
    if not fps or stream.time_base is None:
        return None
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    want = set(wanted)
    got: dict[int, np.ndarray] = {}
    idx = -1
    try:
        container.seek(int((start + wanted[0] / fps) / stream.time_base), stream=stream, backward=True)
        first = True
        for frame in container.decode(stream):
            idx = _frame_index(frame, stream, start, fps)
            if idx < 0 or (first and idx > wanted[0]):
                return None
            first = False
            if idx in want:
                got[idx] = frame.to_ndarray(format="rgb24")
            if idx >= wanted[-1]:
                break
    except _decode_errors() as exc:
        raise MediaError("unreadable", f"{path}: decoding failed after {len(got)} frames: {exc}") from None
    return got, idx


def decode_video_frames(path: Path, indices: list[int], limits: Limits) -> np.ndarray:
    """The frames at ``indices`` (decode order, sorted ascending), uint8 [F, H, W, 3] RGB.
    Fewer decodable frames than requested is an error, never padding.

    A clip that starts late in the video is reached by a keyframe seek and timestamps
    (``_decode_after_seek``); one that starts in the first ``SEEK_MIN_FRAMES`` frames, or a
    stream without usable timestamps, is decoded from the first frame."""
    wanted = sorted(set(indices))
    found = None
    if wanted[0] >= SEEK_MIN_FRAMES:
        with _open_video(path) as container:
            info = _video_info(path, container, limits)
            found = _decode_after_seek(path, container, container.streams.video[0], info, wanted)
    if found is None:  # a fresh demuxer: decode ordinals count from the real first frame
        with _open_video(path) as container:
            _video_info(path, container, limits)
            found = _decode_from_start(path, container, container.streams.video[0], wanted)
    got, last = found
    if last < 0:
        raise MediaError("zero_frames", f"{path}: no frame could be decoded")
    if len(got) < len(wanted):
        raise MediaError("too_short", f"{path}: only {last + 1} frames decodable, frame {wanted[-1]} needed")
    return np.stack([got[i] for i in indices])


def count_decodable_frames(path: Path, limits: Limits) -> tuple[MediaInfo, int]:
    """Header info plus the number of frames that really decode (``data check``)."""
    container = _open_video(path)
    with container:
        info = _video_info(path, container, limits)
        n = 0
        try:
            for _ in container.decode(container.streams.video[0]):
                n += 1
                if n > limits.max_video_frames:
                    raise MediaError("too_large", f"{path}: more than data.max_video_frames={limits.max_video_frames} frames")
        except _decode_errors() as exc:
            raise MediaError("unreadable", f"{path}: decoding failed after {n} frames: {exc}") from None
    if n == 0:
        raise MediaError("zero_frames", f"{path}: the video has no decodable frame")
    if info.frames_exact and n < info.frames - 1:
        raise MediaError("unreadable", f"{path}: only {n} of the {info.frames} frames in its header decode (truncated?)")
    return info, n


# ----------------------------------------------------------------------------- transforms


def resize_cover_crop(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize [F, H, W, 3] keeping aspect so the target is covered, then center-crop to ``size``
    (height, width). Every frame gets the identical geometry."""
    from PIL import Image

    th, tw = size
    h, w = frames.shape[1:3]
    scale = max(th / h, tw / w)
    rh, rw = max(th, round(h * scale)), max(tw, round(w * scale))
    top, left = (rh - th) // 2, (rw - tw) // 2
    if (rh, rw) == (h, w):  # no resampling: the crop alone, without a trip through Pillow per frame
        return np.ascontiguousarray(frames[:, top : top + th, left : left + tw])
    out = np.empty((frames.shape[0], th, tw, 3), dtype=np.uint8)
    for i, f in enumerate(frames):
        img = Image.fromarray(f)
        if (rh, rw) != (h, w):
            img = img.resize((rw, rh), Image.Resampling.BICUBIC)
        out[i] = np.asarray(img)[top : top + th, left : left + tw]
    return out


# ----------------------------------------------------------------------------- worker tasks


def task_probe(path: str, media_type: str, limits: Limits) -> MediaInfo:
    p = Path(path)
    return probe_image(p, limits) if media_type == "image" else probe_video(p, limits)


def task_sample(path: str, media_type: str, limits: Limits, spec: dict) -> np.ndarray:
    """Decode and transform one training sample: uint8 [F, H, W, 3] at the bucket size.
    A static clip returns ONE frame (F=1); expansion to n frames happens in the loader."""
    p = Path(path)
    if media_type == "image":
        frames = decode_image(p, limits)[None]
    elif spec.get("indices") is None:
        frames = decode_video_frame(p, int(spec["static_index"]), limits)[None]
    else:
        frames = decode_video_frames(p, list(spec["indices"]), limits)
    if spec.get("flip"):
        frames = frames[:, :, ::-1]
    return resize_cover_crop(frames, tuple(spec["size"]))


def task_check(path: str, media_type: str, limits: Limits) -> MediaInfo:
    """Full decode for ``data check``: images load, videos are decoded to the last frame and
    ``frames`` becomes the real decodable count."""
    p = Path(path)
    if media_type == "image":
        info = probe_image(p, limits)
        decode_image(p, limits)
        return info
    info, n = count_decodable_frames(p, limits)
    info.frames, info.frames_exact = n, True
    return info
