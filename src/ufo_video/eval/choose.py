"""Which (checkpoint, weight) to use: one stated rule over a sweep's paired metrics.

Users of every UFO-like LoRA ask "which checkpoint is best, at which weight?". A UFO trades motion
for temporal consistency, so "most consistent" alone would always pick the strongest setting
(a frozen video is perfectly consistent), and one prompt at one seed picks noise. The rule:

    Every setting (checkpoint, weight > 0) is compared with the base (weight 0) on the same
    (prompt, seed) pairs. Its gain is the mean paired change of the consistency metric, signed
    so that positive = more consistent. A setting qualifies when the lower end of its gain's
    interval is above 0 and at least the minimum effect, and the lower end of the interval of
    its motion kept (mean motion / the base's) is at least `keep_motion`. Among qualifying
    settings the largest mean gain wins (ties: smaller weight, then the checkpoint listed
    first); when none qualifies the answer is the base: "no setting beats the base reliably".

Intervals are Student t intervals over the pairs (`paired_stats`), at a simultaneous 95 %
(Bonferroni over the settings compared), so that choosing the best of many settings does not
choose noise. The minimum effect defaults to 0.2 x the base's seed-to-seed standard deviation
of the metric (Cohen's "small" standardised effect: a change smaller than a fifth of what
re-seeding does is lost next to it); with one seed per prompt, the spread over all base videos
stands in (larger, so stricter). Consistency defaults to `warp_error` (motion-compensated, so it
does not simply reward standing still the way SSIM does); motion to `flow_px`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ufo_video.errors import UfoError
from ufo_video.eval import paired_stats as ps
from ufo_video.eval.metrics import DEFINITIONS

BASE = "base (no LoRA)"
MIN_EFFECT_SPREADS = 0.2  # default minimum effect, in base seed-to-seed standard deviations
METHOD = ("Student t interval of the mean paired difference over (prompt, seed) pairs; motion kept = ratio of "
          "means with a delta-method t interval; Bonferroni over the settings compared")  # fmt: skip


@dataclass(frozen=True)
class ChoiceRule:
    consistency: str = "warp_error"
    motion: str = "flow_px"
    keep_motion: float = 0.8
    min_effect: float | None = None  # None: MIN_EFFECT_SPREADS x the base's seed-to-seed spread
    level: float = ps.LEVEL

    def __post_init__(self) -> None:
        for what, name in (("consistency", self.consistency), ("motion", self.motion)):
            if name not in DEFINITIONS:
                raise UfoError(f"{what} metric {name!r} is unknown; choose one of: {', '.join(DEFINITIONS)}")
        if not (isinstance(self.keep_motion, (int, float)) and 0 <= self.keep_motion <= 1):
            raise UfoError(f"keep_motion must be a share between 0 and 1 (e.g. 0.8), got {self.keep_motion!r}")
        if self.min_effect is not None and not (math.isfinite(self.min_effect) and self.min_effect >= 0):
            raise UfoError(f"min_effect must be a finite number >= 0 (in units of the metric), got {self.min_effect!r}")

    @property
    def higher_is_better(self) -> bool:
        return DEFINITIONS[self.consistency]["better"] == "higher"

    def describe(self, min_effect: float | None = None, comparisons: int | None = None) -> str:
        change = "rise" if self.higher_is_better else "fall"
        effect = (f"{min_effect:.4g}" if min_effect is not None else
                  f"{MIN_EFFECT_SPREADS:g} x the base's seed-to-seed spread" if self.min_effect is None else f"{self.min_effect:.4g}")  # fmt: skip
        over = f" over {comparisons} settings" if comparisons else ""
        return (f"the largest mean {change} of {self.consistency} against the base, among settings (weight > 0) whose "
                f"{self.level:.0%} simultaneous interval{over} of that {change} lies above 0 and above the minimum effect "
                f"{effect}, and whose interval of motion kept ({self.motion} / base) lies at or above {self.keep_motion:.0%}; "
                "otherwise the base (weight 0): no setting beats the base reliably")  # fmt: skip


def _number(value: object, where: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    raise UfoError(f"{where} is {value!r}, not a finite number")


def _numeric_names(metrics: Mapping) -> list[str]:
    return [k for k, v in metrics.items() if isinstance(v, (int, float)) and (isinstance(v, bool) or math.isfinite(v))]


def group_rows(rows: Sequence[Mapping]) -> tuple[dict, dict, list[str]]:
    """(base rows by sample, setting rows by (checkpoint, weight) then sample, checkpoint order).
    A row's sample is its "sample" key (one sample when absent); weight-0 rows of every
    checkpoint are the same base model: the first one of each sample is kept."""
    base: dict[str, Mapping] = {}
    settings: dict[tuple[str, float], dict[str, Mapping]] = {}
    order: list[str] = []
    for row in rows:
        ckpt, weight = str(row["checkpoint"]), _number(row["weight"], "a sweep weight")
        sample = str(row.get("sample", ""))
        if ckpt not in order:
            order.append(ckpt)
        if weight == 0:
            base.setdefault(sample, row)
        else:
            settings.setdefault((ckpt, weight), {})[sample] = row
    return base, settings, order


def _values(rows: list[Mapping], name: str) -> list[float]:
    out = []
    for r in rows:
        if name not in r["metrics"]:
            raise UfoError(f"{r['checkpoint']} at weight {r['weight']:g} has no {name!r} metric")
        out.append(_number(r["metrics"][name], f"{name} of {r['checkpoint']} at weight {r['weight']:g}"))
    return out


def default_min_effect(base_rows: Sequence[Mapping], metric: str) -> tuple[float | None, str]:
    """MIN_EFFECT_SPREADS x the seed-to-seed sd of the base (pooled within prompts), or of all
    base videos when no prompt has two seeds; (None, why) with fewer than two base videos."""
    by_prompt: dict[str, list[float]] = {}
    for r in base_rows:
        by_prompt.setdefault(str(r.get("prompt", r.get("sample", ""))), []).extend(_values([r], metric))
    spread = ps.seed_spread(list(by_prompt.values()))
    if spread is not None:
        return MIN_EFFECT_SPREADS * spread, f"{MIN_EFFECT_SPREADS:g} x the base's seed-to-seed sd of {metric} ({spread:.4g})"
    values = [v for vals in by_prompt.values() for v in vals]
    if len(values) < 2:
        return None, "needs at least two base videos"
    spread = ps._sd(values)
    return MIN_EFFECT_SPREADS * spread, f"{MIN_EFFECT_SPREADS:g} x the sd of {metric} over the base videos ({spread:.4g}; one seed per prompt)"


def recommend(rows: Sequence[Mapping], rule: ChoiceRule | None = None) -> dict:
    """Apply the rule to rows {"checkpoint", "weight", "sample", "prompt"?, "metrics"}.

    Returns {"checkpoint" (None for the base), "weight", "reason", "rule", "method", "level",
    "simultaneous_level", "min_effect", "min_effect_source", "pairs", "base": {consistency,
    motion}, "candidates": [{checkpoint, weight, n, consistency, motion, gain, motion_kept,
    motion_share, differences: {metric: interval}, keeps_motion, reliable, eligible}]}.
    """
    rule = rule or ChoiceRule()
    base, settings, order = group_rows(rows)
    if not base:
        raise UfoError("the rule compares each setting with the base model: include weight 0 in the sweep")
    sign = 1.0 if rule.higher_is_better else -1.0
    if rule.min_effect is not None:
        min_effect, source = rule.min_effect, "given (--min-effect)"
    else:
        min_effect, source = default_min_effect(list(base.values()), rule.consistency)
    level = ps.simultaneous_level(rule.level, len(settings))
    base_rows = list(base.values())
    result = {"rule": rule.describe(min_effect, len(settings)), "method": METHOD, "level": rule.level,
              "simultaneous_level": level, "min_effect": min_effect, "min_effect_source": source,
              "keep_motion": rule.keep_motion, "consistency_metric": rule.consistency, "motion_metric": rule.motion,
              "pairs": len(base),
              "base": {"consistency": sum(_values(base_rows, rule.consistency)) / len(base_rows),
                       "motion": sum(_values(base_rows, rule.motion)) / len(base_rows)}}  # fmt: skip
    candidates = []
    for (ckpt, weight), by_sample in sorted(settings.items(), key=lambda kv: (kv[0][1], order.index(kv[0][0]))):
        samples = [s for s in base if s in by_sample]
        if not samples:
            raise UfoError(f"{ckpt} at weight {weight:g} shares no (prompt, seed) with the base videos")
        b, s = [base[k] for k in samples], [by_sample[k] for k in samples]
        cb, cs = _values(b, rule.consistency), _values(s, rule.consistency)
        mb, ms = _values(b, rule.motion), _values(s, rule.motion)
        gain = ps.mean_interval([sign * (x - y) for x, y in zip(cs, cb)], level)
        kept = ps.ratio_interval(ms, mb, level)
        differences = {name: ps.paired_difference(_values(s, name), _values(b, name), level)
                       for name in _numeric_names(s[0]["metrics"]) if name in b[0]["metrics"]}  # fmt: skip
        if kept["ratio"] is None:  # a static base has no motion to lose
            keeps = True
        else:
            keeps = kept["low"] is not None and kept["low"] >= rule.keep_motion
        reliable = gain["low"] is not None and gain["low"] > 0 and min_effect is not None and gain["low"] >= min_effect
        candidates.append({"checkpoint": ckpt, "weight": weight, "n": len(samples),
                           "consistency": sum(cs) / len(cs), "motion": sum(ms) / len(ms),
                           "gain": gain, "motion_kept": kept, "motion_share": kept["ratio"],
                           "differences": differences, "keeps_motion": keeps, "reliable": reliable,
                           "eligible": keeps and reliable})  # fmt: skip
    result["candidates"] = candidates
    eligible = [c for c in candidates if c["eligible"]]
    best = max(eligible, key=lambda c: c["gain"]["mean"], default=None)  # first of equals: smaller weight
    if best is None:
        return {"checkpoint": None, "weight": 0.0, "reason": _none_reason(candidates, rule, min_effect, source, len(base)), **result}
    g, k = best["gain"], best["motion_kept"]
    share = "base has no motion" if k["ratio"] is None else f"motion kept {k['ratio']:.0%} [{k['low']:.0%}, {k['high']:.0%}]"
    reason = (f"{best['checkpoint']} at weight {best['weight']:g}: {rule.consistency} "
              f"{'rises' if sign > 0 else 'falls'} by {g['mean']:.4g} [{g['low']:.4g}, {g['high']:.4g}] over "
              f"{best['n']} (prompt, seed) pairs (minimum effect {min_effect:.4g}); {share}")  # fmt: skip
    return {"checkpoint": best["checkpoint"], "weight": best["weight"], "reason": reason, **result}


def _interval(i: dict) -> str:
    return f"{i['mean']:.4g}" + ("" if i["low"] is None else f" [{i['low']:.4g}, {i['high']:.4g}]")


def _none_reason(candidates: list[dict], rule: ChoiceRule, min_effect: float | None, source: str, pairs: int) -> str:
    head = "no setting beats the base reliably"
    if pairs < 2 or min_effect is None:
        return f"{head}: {pairs} (prompt, seed) pair(s) give no interval; use more prompts or --seeds"
    if not candidates:
        return f"{head}: no setting with weight > 0 was rendered"
    best = max(candidates, key=lambda c: c["gain"]["mean"])
    k = best["motion_kept"]
    kept = "n/a" if k["ratio"] is None else _interval({"mean": k["ratio"], "low": k["low"], "high": k["high"]})
    why = []
    if not best["reliable"]:
        why.append(f"its gain's interval is not above both 0 and the minimum effect {min_effect:.4g} ({source})")
    if not best["keeps_motion"]:
        why.append(f"its motion kept is not surely >= {rule.keep_motion:.0%}")
    return (f"{head}: the largest gain in {rule.consistency} is {best['checkpoint']} at weight {best['weight']:g}, "
            f"{_interval(best['gain'])} over {best['n']} pairs, motion kept {kept}; " + " and ".join(why))
