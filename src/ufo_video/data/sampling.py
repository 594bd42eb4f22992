"""Deterministic per-sample randomness, frame-index sampling and the short-video policy.

Every random choice (static frame, clip start, flip, caption dropout) comes from a generator
seeded by (seed, epoch, index, purpose), so it does not depend on worker count, process count,
iteration order or resume point.

A moving clip that is too short for ``video_sample_n_frames`` at the stride follows
``data.short_video_policy`` and is always reported as a notice; frames are never padded with
black or repeated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ufo_video.data.buckets import TEMPORAL, floor_frames

_PURPOSES = {"static_frame": 1, "start": 2, "flip": 3, "text": 4, "refill": 5, "side": 6, "order": 7}


def rng_for(seed: int, epoch: int, index: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng([seed % (1 << 63), epoch, index, _PURPOSES[purpose]])


def drop_text(seed: int, epoch: int, index: int, ratio: float) -> bool:
    """Whether this sample's caption is replaced by "" (classifier-free guidance training)."""
    return ratio > 0 and bool(rng_for(seed, epoch, index, "text").random() < ratio)


def do_flip(seed: int, epoch: int, index: int, enabled: bool) -> bool:
    return enabled and bool(rng_for(seed, epoch, index, "flip").random() < 0.5)


def static_frame_index(total: int, mode: str, seed: int, epoch: int, index: int) -> int:
    """The one frame a static clip is made of: the middle (``len // 2``, as the reference) or random."""
    if mode == "middle":
        return total // 2
    return int(rng_for(seed, epoch, index, "static_frame").integers(total))


def span(frames: int, step: float) -> int:
    """Source frames covered by ``frames`` samples ``step`` apart."""
    return int(math.floor((frames - 1) * step + 1e-9)) + 1


@dataclass
class MovingPlan:
    """How a moving clip is sampled: ``step`` between source frames and the most frames it can give."""

    step: float
    frame_cap: int
    notice: str | None = None


def plan_moving(total: int, fps: float | None, n_frames: int, stride: int, target_fps: float | None,
                policy: str, temporal: int = TEMPORAL) -> MovingPlan | None:
    """Step and frame cap for a video of ``total`` frames; None when it must be skipped."""
    notice = None
    step: float = float(stride)
    if target_fps is not None and fps:
        step = fps / target_fps
        if step < 1:
            notice = f"source fps {fps:g} is below data.video_sample_fps={target_fps:g}; consecutive frames used"
            step = 1.0
    if span(n_frames, step) <= total:
        return MovingPlan(step, n_frames, notice)
    short = f"too short: {total} frames, {n_frames} frames at step {step:g} need {span(n_frames, step)}"
    if policy == "skip":
        return None
    if policy == "reduce_stride":
        new_step = (total - 1) / (n_frames - 1) if n_frames > 1 else 1.0
        if target_fps is None:
            new_step = math.floor(new_step)
        if new_step < 1:
            return None
        return MovingPlan(new_step, n_frames, f"{short}; step reduced to {new_step:g}")
    cap = floor_frames(int(math.floor((total - 1) / step + 1e-9)) + 1, temporal)
    return MovingPlan(step, cap, f"{short}; using {cap} frames")


def short_fix_hint(total: int, n_frames: int, stride: int, temporal: int = TEMPORAL) -> str:
    """What would fit, for ``data check``'s too_short message."""
    fit_frames = floor_frames((total - 1) // stride + 1, temporal)
    fit_stride = (total - 1) // (n_frames - 1) if n_frames > 1 else stride
    parts = [f"{fit_frames} frames at stride {stride}"]
    if fit_stride >= 1:
        parts.append(f"{n_frames} frames at stride {fit_stride}")
    return " or ".join(parts) + " would fit"


def frame_indices(total: int, frames: int, step: float, seed: int, epoch: int, index: int) -> list[int]:
    """``frames`` source indices ``step`` apart from a deterministic random start."""
    room = total - span(frames, step)
    start = int(rng_for(seed, epoch, index, "start").integers(room + 1)) if room > 0 else 0
    return [start + int(math.floor(k * step + 1e-9)) for k in range(frames)]
