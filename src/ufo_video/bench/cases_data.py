"""Data cases: the training loader's throughput against raw decoding with the same libraries,
and the memory of a static clip against one frame.

loader / loader_images: A = decoding every frame the loader delivers with PyAV (videos) or
Pillow (images) in a plain loop; B = one epoch of `build_train_loader` with the config's
default decode workers, building the loader included (the trainer builds one per epoch). The
ratio is frames/s of the loader over frames/s of the raw loop (>= 0.9 wanted: isolation,
resizing and batching should cost little). Source files are the bucket size, so the resize is
a no-op size-wise.

The target is about STEADY state: B is an epoch after the first in the same process (header
probes memoised, decode workers already started), i.e. every epoch of a run but the first. The
FIRST epoch (probing every header and forking the workers included: what a user waits for at
start) is measured too and reported in the notes and details. The data set is ``DATA_SCALE``
times the preset's loader set, so per-file costs, not one-off costs, dominate an epoch.

static_memory: extra peak memory while the loader builds a static clip of N frames from an
image, over the same for a 1-frame clip (decode in-process, `dataloader_num_workers=0`, so the
measurement sees it). The loader returns one frame `expand`-ed along time (a view), so the
ratio should stay near 1 (O(1) in N); the reference held the image N times.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager

import numpy as np

from ufo_video.bench.measure import (M_MMAP_THRESHOLD, Spread, _glibc, interleave, peak_memory,
                                     prepare_cpu_memory_accounting, timed)
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


DATA_SCALE = 4  # files per case: 4 x the preset's loader set (small: 32 mp4s, 64 PNGs)
GLIBC_DYNAMIC_MMAP_MAX = 32 * 2**20  # where glibc's own threshold stops growing (64-bit)


@contextmanager
def _allocator_as_in_training():
    """The bench pins glibc's mmap threshold at 256 KiB for its peak-memory accounting
    (``measure.prepare_cpu_memory_accounting``), so every batch tensor of a few MiB becomes a
    fresh mmap whose pages fault in on first write: that made the loader's float conversion 4x
    slower than in a training process, where glibc raises the threshold to the largest freed
    block (up to 32 MiB) and reuses the memory. The throughput timing runs with that threshold;
    the pin is restored for the peak-memory measurements."""
    lib = _glibc()
    if lib is not None:
        lib.mallopt(M_MMAP_THRESHOLD, GLIBC_DYNAMIC_MMAP_MAX)
    try:
        yield
    finally:
        if lib is not None:
            prepare_cpu_memory_accounting()


def _epoch(cfg, epoch: int = 0) -> int:
    """One epoch of the trainer's loader; returns the frames actually decoded and delivered."""
    from ufo_video.data.loader import build_train_loader

    loader = build_train_loader(cfg, seed=cfg.train.seed, epoch=epoch)
    frames = 0
    for batch in loader:
        px = batch["pixel_values"]
        # a static clip is one decoded frame expanded along time (stride 0)
        frames += px.shape[0] * (1 if px.stride(2) == 0 else px.shape[2])
    return frames


def _forget_process_state() -> None:
    """As in a fresh process: no memoised header, no started decode worker."""
    from ufo_video.data import plan, workers

    plan._PROBE_MEMO.clear()
    workers.close_shared_pool()


def _first_epoch_timing(raw, cfg, rounds: int, device) -> tuple[list[float], list[float]]:
    """(raw seconds, first-epoch seconds) per round; the reset before each first epoch is untimed."""
    sa, sb = [], []
    for r in range(rounds):
        _forget_process_state()
        if r % 2:
            sa.append(timed(raw, device))
        sb.append(timed(lambda: _epoch(cfg), device))
        if not r % 2:
            sa.append(timed(raw, device))
    return sa, sb


def _throughput_case(ws: Workspace, name: str, kind: str) -> CaseResult:
    import json

    p = ws.preset
    h, w, f = p.loader_video_size
    if kind == "video":
        n = p.loader_videos * DATA_SCALE
        meta = ws.dataset(f"loader-videos-{n}", videos=n, video_size=(h, w, f))
        data = {"data__clip_mode": "video", "data__video_sample_n_frames": f}
    else:
        n = p.loader_images * DATA_SCALE
        meta = ws.dataset(f"loader-images-{n}", images=n, image_side=h)
        data = {"data__clip_mode": "static", "data__video_sample_n_frames": 1}
    from ufo_video.config import DataSection

    workers = DataSection.model_fields["dataloader_num_workers"].default
    cfg = ws.train_config(meta, data__image_sample_size=h, data__video_sample_size=h, data__token_sample_size=h,
                          data__dataloader_num_workers=workers, **data)  # fmt: skip
    paths = [meta.parent / r["file_path"] for r in json.loads(meta.read_text())]
    raw = (lambda: _raw_video_frames(paths)) if kind == "video" else (lambda: _raw_image_frames(paths))
    with _allocator_as_in_training():
        first_a, first_b = _first_epoch_timing(raw, cfg, min(ws.rounds, 3), ws.device)
        raw_frames, loader_frames = raw(), _epoch(cfg)  # (also the warm-up of the steady state)
        epochs = iter(range(1, 1_000_000))  # a new loader per call, as the trainer's next epochs
        timing = interleave(raw, lambda: _epoch(cfg, next(epochs)), ws.rounds, ws.device, warmup=0)
    scale = loader_frames / raw_frames
    ratios = [a / b * scale for a, b in zip(timing.a_seconds, timing.b_seconds)]
    first = Spread.of([a / b * scale for a, b in zip(first_a, first_b)])
    peak_a, _ = peak_memory(raw, ws.device)
    peak_b, _ = peak_memory(lambda: _epoch(cfg, 0), ws.device)
    _forget_process_state()  # no idle decode worker during the other cases
    what = f"{len(paths)} mp4s {f}x{h}x{w}" if kind == "video" else f"{len(paths)} PNGs {h}x{w}"
    return CaseResult(
        name, f"training loader throughput vs raw {'PyAV' if kind == 'video' else 'Pillow'} decode ({what})",
        "raw decode frames/s", "loader frames/s (steady-state epoch)", Spread.of(ratios), Target(">=", 0.9),
        Spread.of(timing.a_seconds), Spread.of(timing.b_seconds), peak_a, peak_b,
        unit="frames/s B / frames/s A (higher is better)",
        notes=[f"loader with dataloader_num_workers={workers} (the default); B = an epoch after the first "
               "(a new loader, building it included; probes memoised, workers running); peak memory is the "
               "main process's only (decoding happens in the workers)",
               f"first epoch (probing every header and starting the workers included): ratio {first.median:.3f} "
               f"(min..max {first.min:.3f}..{first.max:.3f}), {statistics.median(first_b):.3g} s"],
        details={"frames_raw": raw_frames, "frames_loader": loader_frames, "workers": workers,
                 "first_epoch_ratio": first.__dict__, "first_epoch_seconds": Spread.of(first_b).__dict__,
                 "first_epoch_raw_seconds": Spread.of(first_a).__dict__},
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
