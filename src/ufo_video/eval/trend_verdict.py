"""The verdict on UFO's expected trend, computed from the measured trend — never assumed.

Used by the demo's report and by `ufo-video sweep`'s page, so it lives in eval/ (below both).

Expected (UFO paper): as the LoRA weight α grows, temporal consistency does not fall and
dynamics do not rise. Checked on three metrics of `ufo_video.eval.metrics`:
ssim (consistency, must be non-decreasing), warp_error (motion-compensated inconsistency, must
be non-increasing) and flow_px (amount of motion, must be non-increasing). Each check lists the
weight steps that go the wrong way, with the size of the step, so a failure says where.
"""

from __future__ import annotations

# metric -> the direction UFO should move it as alpha grows ("up" = non-decreasing)
EXPECTED: dict[str, str] = {"ssim": "up", "warp_error": "down", "flow_px": "down"}
KIND = {"ssim": "consistency", "warp_error": "consistency", "flow_px": "dynamics"}


def check_metric(trend_result: dict, metric: str, want: str) -> dict:
    """{metric, kind, want, holds, first, last, change, violations: [{from, to, step}]}."""
    info = trend_result["metrics"][metric]
    weights, values = trend_result["weights"], info["values"]
    violations = []
    for i in range(len(values) - 1):
        step = values[i + 1] - values[i]
        if (want == "up" and step < 0) or (want == "down" and step > 0):
            violations.append({"from": weights[i], "to": weights[i + 1], "step": step})
    holds = info["non_decreasing"] if want == "up" else info["non_increasing"]
    return {"metric": metric, "kind": KIND.get(metric, ""), "want": want, "holds": bool(holds),
            "first": values[0], "last": values[-1], "change": values[-1] - values[0],
            "violations": violations}  # fmt: skip


def verdict(trends: dict[str, dict], expected: dict[str, str] | None = None) -> dict:
    """The verdict over all videos (`trends["all"]`) plus each other group (e.g. t2v, i2v)."""
    expected = EXPECTED if expected is None else expected
    groups = {name: [check_metric(t, m, w) for m, w in expected.items()] for name, t in trends.items()}
    holds = all(c["holds"] for c in groups["all"])
    return {"holds": holds, "judged": True, "groups": groups,
            "statement": statement(holds, groups["all"], trends["all"]["weights"])}


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def statement(holds: bool, checks: list[dict], weights: list[float]) -> str:
    """One honest sentence per metric, from the numbers."""
    span = f"alpha {_fmt(weights[0])} -> {_fmt(weights[-1])}"
    head = ("The expected UFO trend HOLDS" if holds else "The expected UFO trend does NOT hold") + \
        f" over all videos ({span}, {len(weights)} weights; consistency non-decreasing, dynamics non-increasing)."
    parts = [head]
    for c in checks:
        word = "rises" if c["change"] > 0 else "falls" if c["change"] < 0 else "stays"
        line = f"{c['metric']} ({c['kind']}, expected {'non-decreasing' if c['want'] == 'up' else 'non-increasing'}) " \
               f"{word} from {_fmt(c['first'])} to {_fmt(c['last'])}"
        if c["violations"]:
            bad = ", ".join(f"{_fmt(v['from'])}->{_fmt(v['to'])} ({v['step']:+.3g})" for v in c["violations"])
            line += f"; wrong way at {bad}"
        else:
            line += "; monotone as expected"
        parts.append(line + ".")
    return " ".join(parts)
