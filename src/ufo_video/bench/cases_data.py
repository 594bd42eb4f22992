"""Data cases: the training loader's throughput against raw decoding with the same libraries,
and the memory of a static clip against one frame.

loader / loader_images: A = decoding every frame the loader delivers with PyAV (videos) or
Pillow (images) in a plain loop; B = one epoch of `build_train_loader` with the config's
default decode workers (building the loader included: the trainer builds one per epoch). The
ratio is frames/s of the loader over frames/s of the raw loop (>= 0.9 wanted: isolation,
resizing and batching should cost little). Source files are the bucket size, so the resize is
a no-op size-wise (the loader still passes every frame through Pillow).

static_memory: extra peak memory while the loader builds a static clip of N frames from an
image, over the same for a 1-frame clip (decode in-process, `dataloader_num_workers=0`, so the
measurement sees it). The loader returns one frame `expand`-ed along time (a view), so the
ratio should stay near 1 (O(1) in N); the reference held the image N times.
"""

from __future__ import annotations

import time

import numpy as np

from ufo_video.bench.measure import Spread, interleave, peak_memory
from ufo_video.bench.results import CaseResult, Target
from ufo_video.bench.workspace import Workspace


def _raw_video_frames(paths) -> int:
    import av

    n = 0
    for path in paths:
        with av.open(str(path)) as c:
            for frame in c.decode(c.streams.video[0]):
                frame.to_ndarray(format="rgb24")
                n += 1
    return n


def _raw_image_frames(paths) -> int:
    from PIL import Image

    for path in paths:
        with Image.open(path) as img:
            np.asarray(img.convert("RGB"))
    return len(paths)


def _epoch(cfg) -> int:
    """One epoch of the trainer's loader; returns the frames actually decoded and delivered."""
    from ufo_video.data.loader import build_train_loader

    loader = build_train_loader(cfg, seed=cfg.train.seed, epoch=0)
    frames = 0
    for batch in loader:
        px = batch["pixel_values"]
        # a static clip is one decoded frame expanded along time (stride 0)
        frames += px.shape[0] * (1 if px.stride(2) == 0 else px.shape[2])
    return frames


def _throughput_case(ws: Workspace, name: str, kind: str) -> CaseResult:
    import json

    p = ws.preset
    h, w, f = p.loader_video_size
    if kind == "video":
        meta = ws.dataset("loader-videos", videos=p.loader_videos, video_size=(h, w, f))
        data = {"data__clip_mode": "video", "data__video_sample_n_frames": f}
    else:
        meta = ws.dataset("loader-images", images=p.loader_images, image_side=h)
        data = {"data__clip_mode": "static", "data__video_sample_n_frames": 1}
    from ufo_video.config import DataSection

    workers = DataSection.model_fields["dataloader_num_workers"].default
    cfg = ws.train_config(meta, data__image_sample_size=h, data__video_sample_size=h, data__token_sample_size=h,
                          data__dataloader_num_workers=workers, **data)  # fmt: skip
    paths = [meta.parent / r["file_path"] for r in json.loads(meta.read_text())]
    raw = (lambda: _raw_video_frames(paths)) if kind == "video" else (lambda: _raw_image_frames(paths))
    raw_frames, loader_frames = raw(), _epoch(cfg)
    timing = interleave(raw, lambda: _epoch(cfg), ws.rounds, ws.device, warmup=0)
    ratios = [a / b * loader_frames / raw_frames for a, b in zip(timing.a_seconds, timing.b_seconds)]
    peak_a, _ = peak_memory(raw, ws.device)
    peak_b, _ = peak_memory(lambda: _epoch(cfg), ws.device)
    what = f"{len(paths)} mp4s {f}x{h}x{w}" if kind == "video" else f"{len(paths)} PNGs {h}x{w}"
    return CaseResult(
        name, f"training loader throughput vs raw {'PyAV' if kind == 'video' else 'Pillow'} decode ({what})",
        "raw decode frames/s", "loader frames/s", Spread.of(ratios), Target(">=", 0.9),
        Spread.of(timing.a_seconds), Spread.of(timing.b_seconds), peak_a, peak_b,
        unit="frames/s B / frames/s A (higher is better)",
        notes=[f"loader with dataloader_num_workers={workers} (the default), one epoch including building the "
               "loader; peak memory is the main process's only (decoding happens in the workers)"],
        details={"frames_raw": raw_frames, "frames_loader": loader_frames, "workers": workers},
    )  # fmt: skip


def case_loader(ws: Workspace) -> CaseResult:
    return _throughput_case(ws, "loader", "video")


def case_loader_images(ws: Workspace) -> CaseResult:
    return _throughput_case(ws, "loader_images", "image")


def case_static_memory(ws: Workspace) -> CaseResult:
    from ufo_video.data.loader import build_train_loader

    p = ws.preset
    side = p.static_side
    meta = ws.dataset("static", images=1, image_side=side)

    def clip(frames: int):
        cfg = ws.train_config(meta, data__clip_mode="static", data__video_sample_n_frames=frames,
                              data__image_sample_size=side, data__video_sample_size=side, data__token_sample_size=side)

        def run():
            return next(iter(build_train_loader(cfg, seed=0, epoch=0)))["pixel_values"]

        return run

    one, many = clip(1), clip(p.static_frames)
    if ws.warmup:
        one()
        many()  # warm-up: imports and first-call allocations are not part of the clip
    peaks_a, peaks_b, secs_a, secs_b = [], [], [], []
    for r in range(ws.rounds):
        for fn, peaks, secs in ((one, peaks_a, secs_a), (many, peaks_b, secs_b))[:: 1 if r % 2 == 0 else -1]:
            t0 = time.perf_counter()
            peak, px = peak_memory(fn, ws.device)
            secs.append(time.perf_counter() - t0)
            peaks.append(peak)
            shape, stored = tuple(px.shape), px.untyped_storage().nbytes()
            if fn is many:
                many_shape, many_stored = shape, stored
            else:
                one_stored = stored
    if None in peaks_a + peaks_b:
        ratios = [many_stored / one_stored]
        note = "no peak-memory method on this platform: ratio of the batch tensors' storage instead"
    else:
        ratios = [b / max(a, 1) for a, b in zip(peaks_a, peaks_b)]
        note = "peak = extra peak RSS while building the loader and its first batch"
    frame_mb = side * side * 3 * 4 / 2**20
    return CaseResult(
        "static_memory", f"static {p.static_frames}-frame clip from a {side}x{side} image vs a 1-frame clip: peak memory",
        "1-frame clip peak", f"{p.static_frames}-frame clip peak", Spread.of(ratios), Target("<=", 1.25),
        Spread.of(secs_a), Spread.of(secs_b), int(np.median(peaks_a)) if None not in peaks_a else None,
        int(np.median(peaks_b)) if None not in peaks_b else None, unit="peak memory B / peak memory A",
        notes=[note, f"O(1) target: <= 1.25 (materialising the clip would add {p.static_frames - 1} x {frame_mb:.2f} MB)"],
        details={"batch_shape": list(many_shape), "batch_storage_bytes": many_stored,
                 "one_frame_storage_bytes": one_stored, "peaks_a": peaks_a, "peaks_b": peaks_b},
    )  # fmt: skip
