"""Which (checkpoint, weight) to use: one stated rule over a sweep's metrics.

Users of every UFO-like LoRA ask "which checkpoint is best, at which weight?". A UFO trades motion
for temporal consistency, so "most consistent" alone would always pick the strongest setting
(a frozen video is perfectly consistent). The rule therefore bounds the price in motion:

    Among the settings with weight > 0 whose motion is at least `keep_motion` times the base
    model's (weight 0), recommend the one with the best consistency. It must also be more
    consistent than the base; otherwise the recommendation is the base itself (weight 0).
    Ties go to the smaller weight, then to the checkpoint listed first.

Consistency defaults to `warp_error` (lower = better): it is motion-compensated, so it does not
simply reward a video for standing still the way frame-to-frame SSIM does. Motion defaults to
`flow_px`. Both may be any metric of `ufo_video.eval.metrics.DEFINITIONS`; the better direction
is taken from there. Rows that share a (checkpoint, weight) (several prompts or seeds) are
averaged first; weight-0 rows of every checkpoint are the same base model and are pooled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ufo_video.errors import UfoError
from ufo_video.eval.metrics import DEFINITIONS

BASE = "base (no LoRA)"


@dataclass(frozen=True)
class ChoiceRule:
    consistency: str = "warp_error"
    motion: str = "flow_px"
    keep_motion: float = 0.8

    def __post_init__(self) -> None:
        for what, name in (("consistency", self.consistency), ("motion", self.motion)):
            if name not in DEFINITIONS:
                raise UfoError(f"{what} metric {name!r} is unknown; choose one of: {', '.join(DEFINITIONS)}")
        if not (isinstance(self.keep_motion, (int, float)) and 0 <= self.keep_motion <= 1):
            raise UfoError(f"keep_motion must be a share between 0 and 1 (e.g. 0.8), got {self.keep_motion!r}")

    @property
    def higher_is_better(self) -> bool:
        return DEFINITIONS[self.consistency]["better"] == "higher"

    def describe(self) -> str:
        best = "highest" if self.higher_is_better else "lowest"
        return (f"the {best} {self.consistency} among settings (weight > 0) whose {self.motion} is at least "
                f"{self.keep_motion:.0%} of the base model's, if it beats the base; else the base (weight 0)")  # fmt: skip


def _number(value: object, where: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    raise UfoError(f"{where} is {value!r}, not a finite number")


def _means(rows: Sequence[Mapping], rule: ChoiceRule) -> tuple[dict[tuple[str, float], tuple[float, float]], list[str]]:
    """(checkpoint, weight) -> (mean consistency, mean motion), base pooled under (BASE, 0.0)."""
    sums: dict[tuple[str, float], list[tuple[float, float]]] = {}
    order: list[str] = []
    for row in rows:
        ckpt, weight = str(row["checkpoint"]), _number(row["weight"], "a sweep weight")
        metrics = row["metrics"]
        for name in (rule.consistency, rule.motion):
            if name not in metrics:
                raise UfoError(f"{ckpt} at weight {weight:g} has no {name!r} metric")
        key = (BASE, 0.0) if weight == 0 else (ckpt, weight)
        if ckpt not in order:
            order.append(ckpt)
        c = _number(metrics[rule.consistency], f"{rule.consistency} of {ckpt} at weight {weight:g}")
        m = _number(metrics[rule.motion], f"{rule.motion} of {ckpt} at weight {weight:g}")
        sums.setdefault(key, []).append((c, m))
    means = {k: (sum(c for c, _ in v) / len(v), sum(m for _, m in v) / len(v)) for k, v in sums.items()}
    return means, order


def recommend(rows: Sequence[Mapping], rule: ChoiceRule | None = None) -> dict:
    """Apply the rule to rows {"checkpoint", "weight", "metrics"}.

    Returns {"checkpoint" (None for the base), "weight", "reason", "rule", "base": {consistency,
    motion}, "candidates": [{checkpoint, weight, consistency, motion, motion_share, eligible}]}.
    """
    rule = rule or ChoiceRule()
    means, order = _means(rows, rule)
    if (BASE, 0.0) not in means:
        raise UfoError("the rule compares each setting with the base model: include weight 0 in the sweep")
    base_c, base_m = means.pop((BASE, 0.0))
    floor = rule.keep_motion * base_m
    sign = 1.0 if rule.higher_is_better else -1.0
    candidates = []
    for (ckpt, weight), (c, m) in sorted(means.items(), key=lambda kv: (kv[0][1], order.index(kv[0][0]))):
        candidates.append({"checkpoint": ckpt, "weight": weight, "consistency": c, "motion": m,
                           "motion_share": m / base_m if base_m > 0 else None,
                           "eligible": m >= floor})  # fmt: skip
    eligible = [c for c in candidates if c["eligible"]]
    # sorted by weight then listing order, so max() keeps the first of equals: the smaller weight
    best = max(eligible, key=lambda c: sign * c["consistency"], default=None)
    result = {"rule": rule.describe(), "base": {"consistency": base_c, "motion": base_m}, "candidates": candidates}
    if best is None:
        reason = (f"no setting keeps {rule.motion} >= {rule.keep_motion:.0%} of the base's ({base_m:.4g}); "
                  "use the base, or lower the weights / the motion share")  # fmt: skip
        return {"checkpoint": None, "weight": 0.0, "reason": reason, **result}
    if sign * best["consistency"] <= sign * base_c:
        reason = (f"no setting that keeps the motion is more consistent than the base ({rule.consistency} "
                  f"{base_c:.4g}; best {best['checkpoint']} at {best['weight']:g}: {best['consistency']:.4g})")  # fmt: skip
        return {"checkpoint": None, "weight": 0.0, "reason": reason, **result}
    share = f"{best['motion_share']:.0%} of the base's motion" if best["motion_share"] is not None else "base has no motion"
    reason = (f"{best['checkpoint']} at weight {best['weight']:g}: {rule.consistency} {best['consistency']:.4g} "
              f"(base {base_c:.4g}), {rule.motion} {best['motion']:.4g} ({share})")  # fmt: skip
    return {"checkpoint": best["checkpoint"], "weight": best["weight"], "reason": reason, **result}
