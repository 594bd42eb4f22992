"""The epoch plan: which samples form which global batch, at which size and frame count.

Planning needs only header facts (probed once per file and memoised by path, inode, size and mtime),
never pixels, so ``skip_batches`` costs nothing and every process computes the same plan. The memo
lives for the process, so the trainer's next epoch probes nothing (and starts no worker for it).

Order for (seed, epoch): samples are grouped by (media type, aspect ratio, frame cap); each group
is shuffled and cut into global batches of ``train_batch_size * num_processes`` (the last one
topped up with earlier members of the same group, so every sample is seen each epoch and all
processes get the same number of batches); then the batch order is shuffled. Each global batch
draws its base side (``buckets.side_choices``) from its own seeded generator.

Once per run: inside ``sample_list_per_run()`` (the trainer's whole run) the sample list (the
metadata read, every path resolved and stat'ed, headers looked up, moving-clip plans) is built
by the first loader and reused by every later epoch's loader; only the batch order is planned per
epoch, and a skipped file (missing, unreadable) is reported once per run, briefly (``skips.py``).
Outside it (``data check``, tools, tests) every loader builds its own, so an edited file is seen
by the next loader.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from dataclasses import dataclass

import numpy as np

from ufo_video.config import DataSection
from ufo_video.data import buckets, skips
from ufo_video.data.media import Limits, MediaInfo, task_probe
from ufo_video.data.metadata import Entry, load_entries
from ufo_video.data.sampling import MovingPlan, plan_moving, rng_for
from ufo_video.data.workers import map_isolated
from ufo_video.errors import DataError

_PROBE_MEMO: dict[tuple[str, int, int, int, int, Limits], MediaInfo] = {}


@dataclass
class Sample:
    entry: Entry
    info: MediaInfo
    moving: MovingPlan | None  # None for static clips
    group: tuple


@dataclass
class PlannedBatch:
    number: int
    indices: list[int]  # metadata indices of the whole global batch
    bucket: buckets.Bucket
    static: bool


def limits_of(d: DataSection) -> Limits:
    return Limits(d.max_image_pixels, d.max_video_pixels, d.max_video_frames)


def probe_entries(entries: list[Entry], d: DataSection, workers: int) -> dict[int, MediaInfo | tuple[str, str]]:
    """Header info per entry index, or (code, reason) when the file cannot be used."""
    limits = limits_of(d)
    out: dict[int, MediaInfo | tuple[str, str]] = {}
    todo: list[tuple[Entry, tuple]] = []
    for e in entries:
        try:
            st = e.path.stat()
        except OSError as exc:
            out[e.index] = ("missing_file", f"{e.path}: {exc.strerror or exc}")
            continue
        # the inode identifies the file behind the path (and a re-pointed symlink) without a
        # path.resolve() per file and epoch
        key = (str(e.path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, limits)
        if key in _PROBE_MEMO:
            out[e.index] = _PROBE_MEMO[key]
        else:
            todo.append((e, key))
    # all memoised (every epoch after the first): no worker is needed at all
    results = map_isolated(task_probe, [(str(e.path), e.type, limits) for e, _ in todo], workers, d.decode_timeout,
                           shared=True) if todo else []
    for (e, key), res in zip(todo, results):
        if res.ok:
            _PROBE_MEMO[key] = res.value
            out[e.index] = res.value
        else:
            out[e.index] = (res.code, res.reason)
    return out


def usable_entries(d: DataSection) -> list[Entry]:
    """Metadata entries for training; paths outside the root stop the run (a config matter)."""
    entries = load_entries(d.train_data_meta, d.train_data_dir, d.allow_outside_paths)
    outside = [e for e in entries if any(c == "outside_root" for c, _ in e.problems)]
    if outside:
        first = next(m for c, m in outside[0].problems if c == "outside_root")
        raise DataError(f"{d.train_data_meta}: {len(outside)} entries point outside the dataset root; "
                        f"first is entry {outside[0].index}: {first}")
    return entries


def data_rules(model_path: str | None) -> Any:
    """The size rules (`models.info.SizeRules`) of the model a run trains, read from its configs;
    None (the common grid of `buckets`) when no model folder is there yet (``data check`` before a
    download)."""
    from pathlib import Path

    if not model_path or not Path(model_path).is_dir():
        return None
    from ufo_video.models.registry import model_shell

    return model_shell(model_path).rules


def build_samples(entries: list[Entry], d: DataSection, workers: int, rules: Any = None):
    """(samples by index, failures [(path, reason)], notices [(path, message)]); `rules` is the
    model's size rules (None: the common grid)."""
    base = rules.bucket_base if rules is not None else buckets.BASE
    temporal = rules.temporal_factor if rules is not None else buckets.TEMPORAL
    failures: list[tuple[str, str]] = []
    notices: list[tuple[str, str]] = []
    candidates = []
    for e in entries:
        bad = [m for c, m in e.problems if c == "unsupported_format"]
        if bad:
            failures.append((str(e.path), bad[0]))
        else:
            candidates.append(e)
    probed = probe_entries(candidates, d, workers)
    samples: dict[int, Sample] = {}
    for e in candidates:
        info = probed[e.index]
        if isinstance(info, tuple):
            failures.append((str(e.path), info[1]))
            continue
        ratio = buckets.nearest_ratio(info.height, info.width, base) if d.enable_bucket else None
        moving = None
        if d.clip_mode == "video" and e.type == "video":
            moving = plan_moving(info.frames, info.fps, d.video_sample_n_frames, d.video_sample_stride,
                                 d.video_sample_fps, d.short_video_policy, temporal)
            if moving is None:
                notices.append((str(e.path), f"skipped (data.short_video_policy={d.short_video_policy}): "
                                f"{info.frames} frames cannot give {d.video_sample_n_frames} frames"))
                continue
            if moving.notice:
                notices.append((str(e.path), moving.notice))
        cap = moving.frame_cap if moving else d.video_sample_n_frames
        samples[e.index] = Sample(e, info, moving, (e.type, -1 if ratio is None else ratio, cap))
    skips.report_notices(notices)
    return samples, failures, notices


_RUN_SAMPLES: dict[str, tuple] | None = None


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a loader builds its entries, samples and
    plan: hundreds of thousands of small objects without cycles (reference counting frees them),
    which the automatic collections re-walk as they accumulate. Measured on the bench's plan_scale
    data in one quiet process: 0.31 -> 0.24 s at 10k entries, 3.41 -> 2.54 s at 100k (about a
    quarter less at both sizes; the 100k/10k ratio stays about 10.9). Restored afterwards, so any
    cycle made meanwhile is collected then; a decode worker forked meanwhile turns its own
    collector back on (`workers._child`)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextlib.contextmanager
def sample_list_per_run(skip_list: Path | None = None) -> Iterator[None]:
    """Scope in which `run_samples` builds the sample list once per data settings (see module doc)
    and each skipped file is reported once (`skips.per_run`; listed in `skip_list` when given)."""
    global _RUN_SAMPLES
    outer = _RUN_SAMPLES
    _RUN_SAMPLES = {} if outer is None else outer
    try:
        with skips.per_run(skip_list):
            yield
    finally:
        _RUN_SAMPLES = outer


def run_samples(d: DataSection, workers: int, rules: Any = None) -> tuple[int, dict[int, Sample], list, list]:
    """(entries in the metadata, samples by index, failures, notices): built from the metadata on
    the model's size grid `rules`, or, inside `sample_list_per_run`, the list already built for
    the same data settings and rules."""
    key = f"{workers}:{rules!r}:{d.model_dump_json()}"
    if _RUN_SAMPLES is not None and key in _RUN_SAMPLES:
        return _RUN_SAMPLES[key]
    entries = usable_entries(d)
    samples, failures, notices = build_samples(entries, d, workers, rules)
    result = (len(entries), samples, failures, notices)
    if _RUN_SAMPLES is not None:
        _RUN_SAMPLES[key] = result
    return result


def _batch_bucket(group: tuple, number: int, d: DataSection, seed: int, epoch: int, rules: Any = None) -> buckets.Bucket:
    media_type, ratio, frame_cap = group
    if rules is None:
        multiple, temporal, base, sides = buckets.MULTIPLE, buckets.TEMPORAL, buckets.BASE, buckets.SIDE_CHOICES
    else:
        multiple, temporal = rules.size_multiple, rules.temporal_factor
        base, sides = rules.bucket_base, rules.side_choices
    if media_type == "image":
        side = d.image_sample_size
    else:
        choices = buckets.side_choices(d.video_sample_size, d.random_hw_adapt and d.enable_bucket, sides)
        side = int(rng_for(seed, epoch, number, "side").choice(choices))
    h, w = buckets.scaled_size(None if ratio < 0 else ratio, side, multiple, base)
    frames = buckets.frames_for_side(side, d.video_sample_n_frames, d.token_sample_size,
                                     d.training_with_video_token_length, temporal)
    return buckets.Bucket(h, w, buckets.floor_frames(min(frames, frame_cap), temporal))


def plan_batches(samples: dict[int, Sample], d: DataSection, global_batch: int, seed: int, epoch: int,
                 rules: Any = None) -> list[PlannedBatch]:
    """The deterministic list of global batches for (seed, epoch) on the model's size grid."""
    groups: dict[tuple, list[int]] = {}
    for idx in sorted(samples):
        groups.setdefault(samples[idx].group, []).append(idx)
    rng = rng_for(seed, epoch, 0, "order")
    chunks: list[tuple[tuple, list[int]]] = []
    for key in sorted(groups):
        members = [groups[key][i] for i in rng.permutation(len(groups[key]))]
        for start in range(0, len(members), global_batch):
            chunk = members[start : start + global_batch]
            while len(chunk) < global_batch:  # top up from the same group, cyclically
                chunk.append(members[(len(chunk) - (len(members) - start)) % len(members)])
            chunks.append((key, chunk))
    order = rng.permutation(len(chunks))
    batches = []
    for number, c in enumerate(order):
        key, chunk = chunks[c]
        static = samples[chunk[0]].moving is None
        batches.append(PlannedBatch(number, chunk, _batch_bucket(key, number, d, seed, epoch, rules), static))
    return batches


def describe_buckets(batches: list[PlannedBatch]) -> dict[str, int]:
    """'HxWxF' -> number of global batches (for ``data stats`` and logs)."""
    out: dict[str, int] = {}
    for b in batches:
        k = f"{b.bucket.height}x{b.bucket.width}x{b.bucket.frames}"
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


def group_members(samples: dict[int, Sample]) -> dict[tuple, np.ndarray]:
    groups: dict[tuple, list[int]] = {}
    for idx in sorted(samples):
        groups.setdefault(samples[idx].group, []).append(idx)
    return {k: np.array(v) for k, v in groups.items()}
