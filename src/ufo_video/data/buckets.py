"""Aspect-ratio and frame-count buckets, derived by rule from the model's size rules.

The model's adapter gives the grid (`models.info.SizeRules`): sides are multiples of
``size_multiple`` (VAE compression x patch), frame counts are ``temporal_factor * k + 1``, the
aspect family is built around ``bucket_base``^2 pixels and random sides come from
``side_choices``. The defaults below are the common grid (16-pixel sides, 4k+1 frames, base 512,
sides 256..1024 step 128); the loader passes the loaded model's rules.

Aspect ratios: the family of (height, width) pairs of about base^2 pixels, scaled by
``sample_size / base``: for each height base/2..2*base in steps of 32, the widest width
(multiple of 32) with height * width <= base^2 (at base 512 this reproduces the UFO reference's
main entries, e.g. 384x672, 512x512, 1024x256). A sample goes to the pair whose log aspect ratio
is nearest to its own; scaled sides are rounded to multiples of ``size_multiple``.

Sizes and frames (``training_with_video_token_length``): the base side of each global batch is
drawn from ``side_choices``, clamped to ``video_sample_size`` (videos), and frames are capped
so frames * side^2 <= video_sample_n_frames * token_sample_size^2, rounded down to a valid count.
Images use ``image_sample_size`` as their side (no random draw); their static clips get the
same token cap so a 1024^2 image never becomes a 49-frame 1024^2 clip (reference defect 5).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

BASE = 512
SIDE_CHOICES = tuple(range(256, 1025, 128))


@dataclass(frozen=True, order=True)
class Bucket:
    height: int
    width: int
    frames: int


MULTIPLE = 16
TEMPORAL = 4


@functools.lru_cache(maxsize=None)
def aspect_family(base: int = BASE) -> tuple[tuple[int, int], ...]:
    """(height, width) pairs of about base^2 pixels, sorted by aspect ratio height/width."""
    pairs = [(h, (base * base // h) // 32 * 32) for h in range(base // 2, 2 * base + 1, 32)]
    return tuple(sorted(set(pairs), key=lambda p: p[0] / p[1]))


ASPECT_FAMILY = aspect_family()


def nearest_ratio(height: int, width: int, base: int = BASE) -> int:
    """Index into ``aspect_family(base)`` of the closest aspect ratio (log distance, ties -> lower index)."""
    family = aspect_family(base)
    r = math.log(height / width)
    return min(range(len(family)), key=lambda i: abs(math.log(family[i][0] / family[i][1]) - r))


def scaled_size(ratio_index: int | None, side: int, multiple: int = MULTIPLE, base: int = BASE) -> tuple[int, int]:
    """The (height, width) for a ratio scaled to ``side`` (None = square), multiples of ``multiple``."""
    if ratio_index is None:
        return side, side
    h, w = aspect_family(base)[ratio_index]
    m = multiple
    return max(m, round(h * side / base / m) * m), max(m, round(w * side / base / m) * m)


def floor_frames(n: int, temporal: int = TEMPORAL) -> int:
    """Largest ``temporal * k + 1`` <= n (at least 1)."""
    return max(1, (n - 1) // temporal * temporal + 1)


def floor_4k1(n: int) -> int:
    """Largest 4k+1 <= n (at least 1)."""
    return floor_frames(n, 4)


def side_choices(cap: int, random_side: bool, choices: tuple[int, ...] = SIDE_CHOICES) -> tuple[int, ...]:
    """Candidate base sides: ``choices`` up to ``cap`` when random, else just ``cap``."""
    if not random_side:
        return (cap,)
    return tuple(s for s in choices if s <= cap) or (cap,)


def frames_for_side(side: int, n_frames: int, token_size: int, token_length: bool, temporal: int = TEMPORAL) -> int:
    """Frame count under the token budget frames * side^2 <= n_frames * token_size^2, valid for ``temporal``."""
    if not token_length:
        return n_frames
    return floor_frames(min(n_frames, n_frames * token_size * token_size // (side * side)), temporal)
