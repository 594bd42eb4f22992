"""Aspect-ratio and frame-count buckets (EasyAnimate's scheme, derived here by rule).

Aspect ratios: EasyAnimate uses the "ASPECT_RATIO_512" family of (height, width) pairs of about
512^2 pixels, scaled by ``sample_size / 512``. We derive the family instead of copying a table:
for each height 256..1024 in steps of 32, the widest width (multiple of 32) with
height * width <= 512^2 (this reproduces the reference's main entries, e.g. 384x672,
512x512, 1024x256; the reference adds a few extra intermediate widths). A sample goes to the
pair whose log aspect ratio is nearest to its own; scaled sides are rounded to multiples of 16
(VAE 8x times patch 2).

Sizes and frames (``training_with_video_token_length``): the base side of each global batch is
drawn from 256..1024 step 128, clamped to ``video_sample_size`` (videos), and frames are capped
so frames * side^2 <= video_sample_n_frames * token_sample_size^2, rounded down to 4k+1.
Images use ``image_sample_size`` as their side (no random draw); their static clips get the
same token cap so a 1024^2 image never becomes a 49-frame 1024^2 clip (reference defect 5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BASE = 512
SIDE_CHOICES = tuple(range(256, 1025, 128))


@dataclass(frozen=True, order=True)
class Bucket:
    height: int
    width: int
    frames: int


def aspect_family() -> tuple[tuple[int, int], ...]:
    """(height, width) pairs at base 512, sorted by aspect ratio height/width."""
    pairs = [(h, (BASE * BASE // h) // 32 * 32) for h in range(256, 1025, 32)]
    return tuple(sorted(set(pairs), key=lambda p: p[0] / p[1]))


ASPECT_FAMILY = aspect_family()


def nearest_ratio(height: int, width: int) -> int:
    """Index into ``ASPECT_FAMILY`` of the closest aspect ratio (log distance, ties -> lower index)."""
    r = math.log(height / width)
    return min(range(len(ASPECT_FAMILY)), key=lambda i: abs(math.log(ASPECT_FAMILY[i][0] / ASPECT_FAMILY[i][1]) - r))


def scaled_size(ratio_index: int | None, side: int) -> tuple[int, int]:
    """The (height, width) for a ratio scaled to ``side`` (None = square), multiples of 16."""
    if ratio_index is None:
        return side, side
    h, w = ASPECT_FAMILY[ratio_index]
    return max(16, round(h * side / BASE / 16) * 16), max(16, round(w * side / BASE / 16) * 16)


def floor_4k1(n: int) -> int:
    """Largest 4k+1 <= n (at least 1)."""
    return max(1, (n - 1) // 4 * 4 + 1)


def side_choices(cap: int, random_side: bool) -> tuple[int, ...]:
    """Candidate base sides: 256..1024 step 128 up to ``cap`` when random, else just ``cap``."""
    if not random_side:
        return (cap,)
    return tuple(s for s in SIDE_CHOICES if s <= cap) or (cap,)


def frames_for_side(side: int, n_frames: int, token_size: int, token_length: bool) -> int:
    """Frame count under the token budget frames * side^2 <= n_frames * token_size^2, 4k+1."""
    if not token_length:
        return n_frames
    return floor_4k1(min(n_frames, n_frames * token_size * token_size // (side * side)))
