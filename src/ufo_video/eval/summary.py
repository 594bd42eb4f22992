"""Trends of metrics over a LoRA-weight sweep: the check behind "consistency rises with α".

`trend` takes (weight, metrics) pairs, e.g. one `evaluate_frames` result per generated video,
and says for each metric whether it is non-decreasing or non-increasing in the weight. Rows
that share a weight (several seeds or prompts) are averaged first, so the trend is over
distinct weights. Booleans (is_dynamic) count as 0/1, so their mean is a fraction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ufo_video.errors import UfoError
from ufo_video.eval.metrics import DEFINITIONS


def _as_float(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def trend(rows: Sequence[tuple[float, Mapping[str, object]]], tol: float = 0.0) -> dict:
    """Per-metric monotonicity in the weight.

    Returns {"weights": [w1 < w2 < ...], "metrics": {name: {...}}, "skipped": {name: reason}}
    where each metric entry holds
    - values: the metric per distinct weight (mean over rows with that weight);
    - non_decreasing / non_increasing: every step v[i+1] - v[i] >= -tol / <= tol;
    - direction: "flat" (both), "up", "down" or "mixed" (neither);
    - better: "higher" / "lower" from `DEFINITIONS`, or None for an unknown metric;
    - agrees_with_better: True when the metric moves (non-strictly) in its better direction as
      the weight grows, None for unknown metrics. For UFO one expects True for consistency and
      flicker metrics and False (falling) for the dynamics ones.
    A metric missing from some row or with a non-numeric / non-finite value is skipped, with the
    reason. Needs at least two distinct weights (`UfoError` otherwise).
    """
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    rows = list(rows)
    by_weight: dict[float, list[Mapping[str, object]]] = {}
    for weight, metrics in rows:
        w = _as_float(weight)
        if w is None or isinstance(weight, bool):
            raise UfoError(f"sweep weight {weight!r} is not a finite number")
        by_weight.setdefault(w, []).append(metrics)
    weights = sorted(by_weight)
    if len(weights) < 2:
        raise UfoError(f"a trend needs videos at two or more different weights, got weights {weights}")

    names = sorted({name for _, metrics in rows for name in metrics})
    result: dict = {"weights": weights, "metrics": {}, "skipped": {}}
    for name in names:
        values = []
        for w in weights:
            samples = [_as_float(m.get(name)) for m in by_weight[w]]
            if any(s is None for s in samples):
                result["skipped"][name] = f"missing or not a finite number at weight {w}"
                break
            values.append(sum(samples) / len(samples))
        else:
            steps = [b - a for a, b in zip(values, values[1:])]
            up = all(s >= -tol for s in steps)
            down = all(s <= tol for s in steps)
            direction = "flat" if up and down else "up" if up else "down" if down else "mixed"
            better = DEFINITIONS.get(name, {}).get("better")
            agrees = None if better is None else (up if better == "higher" else down)
            result["metrics"][name] = {
                "values": values,
                "non_decreasing": up,
                "non_increasing": down,
                "direction": direction,
                "better": better,
                "agrees_with_better": agrees,
            }
    return result
