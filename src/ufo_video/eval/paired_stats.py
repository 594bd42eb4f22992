"""Paired statistics for a sweep: intervals on the change a LoRA setting makes to the base.

Why: one prompt at one seed recommends noise (a 4e-6 difference once won). Every setting is
rendered on the same (prompt, seed) pairs as the base, so its effect on a metric is judged by
the paired differences d_i = setting_i - base_i, which removes the prompt's and seed's own
level from the comparison.

Method: Student's t interval, mean(d) ± t_{1-a/2, n-1} · sd(d) / sqrt(n). A sweep has few pairs
(2-3 prompts x 2-3 seeds is common); there a percentile bootstrap's interval is too narrow
(it cannot be wider than the observed range, and with n = 4 it covers far less than its
nominal level), while the t interval is exact for normal differences and conservative enough
otherwise; it is also deterministic and checkable by hand. The share of motion kept is a ratio
of means, mean(setting) / mean(base), with the delta-method interval r ± t · sd(s_i - r·b_i) /
(sqrt(n) · mean(b)) (the usual linearisation for paired ratio estimates).

The t quantile is computed from Student's distribution function in closed form for integer
degrees of freedom (Abramowitz & Stegun 26.7.3-4), inverted by bisection: no scipy needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

LEVEL = 0.95


def t_within(t: float, df: int) -> float:
    """P(|T| < t) for Student's T with `df` (integer >= 1) degrees of freedom, t >= 0."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    theta = math.atan(t / math.sqrt(df))
    c, s = math.cos(theta), math.sin(theta)
    if df % 2 == 1:  # odd: (2/pi) (theta + sin(theta) (cos + 2/3 cos^3 + 2·4/(3·5) cos^5 + ...))
        total, term = 0.0, c
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c * c * (2 * k) / (2 * k + 1)
        return (2 / math.pi) * (theta + s * total)
    total, term = 0.0, 1.0  # even: sin(theta) (1 + 1/2 cos^2 + 1·3/(2·4) cos^4 + ...)
    for k in range(1, df // 2 + 1):
        total += term
        term *= c * c * (2 * k - 1) / (2 * k)
    return s * total


def t_quantile(level: float, df: int) -> float:
    """The t with P(|T| < t) = level (two-sided), e.g. 12.706 for level 0.95 and df 1."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    lo, hi = 0.0, 1.0
    while t_within(hi, df) < level:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_within(mid, df) < level else (lo, mid)
    return (lo + hi) / 2


def _sd(values: Sequence[float]) -> float:
    n = len(values)
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0


def mean_interval(values: Sequence[float], level: float = LEVEL) -> dict:
    """{mean, low, high, sd, n, level}: the t interval of the mean; low/high None when n < 2."""
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        raise ValueError("no values")
    mean = sum(vals) / n
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "sd": None, "n": n, "level": level}
    sd = _sd(vals)
    half = t_quantile(level, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "sd": sd, "n": n, "level": level}


def paired_difference(setting: Sequence[float], base: Sequence[float], level: float = LEVEL) -> dict:
    """The interval of mean(setting_i - base_i) over pairs i."""
    if len(setting) != len(base):
        raise ValueError(f"paired values differ in number: {len(setting)} vs {len(base)}")
    return mean_interval([s - b for s, b in zip(setting, base)], level)


def ratio_interval(setting: Sequence[float], base: Sequence[float], level: float = LEVEL) -> dict:
    """{ratio, low, high, n, level}: mean(setting) / mean(base) with its delta-method t interval;
    ratio None when the base's mean is 0 (no motion to keep), low/high None when n < 2."""
    n = len(base)
    if len(setting) != n or n == 0:
        raise ValueError(f"paired values differ in number or are none: {len(setting)} vs {n}")
    mb, ms = sum(base) / n, sum(setting) / n
    if mb == 0:
        return {"ratio": None, "low": None, "high": None, "n": n, "level": level}
    r = ms / mb
    if n < 2:
        return {"ratio": r, "low": None, "high": None, "n": n, "level": level}
    half = t_quantile(level, n - 1) * _sd([s - r * b for s, b in zip(setting, base)]) / (math.sqrt(n) * abs(mb))
    return {"ratio": r, "low": r - half, "high": r + half, "n": n, "level": level}


def seed_spread(groups: Sequence[Sequence[float]]) -> float | None:
    """Pooled within-group standard deviation (a group = one prompt's values over its seeds):
    sqrt(sum of squared deviations from each group's mean / sum of (size - 1)). None when no
    group has two values."""
    ss, dof = 0.0, 0
    for g in groups:
        if len(g) > 1:
            m = sum(g) / len(g)
            ss += sum((v - m) ** 2 for v in g)
            dof += len(g) - 1
    return math.sqrt(ss / dof) if dof else None


def simultaneous_level(level: float, comparisons: int) -> float:
    """Bonferroni: each of `comparisons` intervals at 1 - (1 - level) / comparisons, so that all
    of them hold together with probability >= level (picking the best of many settings would
    otherwise pick noise)."""
    return 1 - (1 - level) / max(1, comparisons)
