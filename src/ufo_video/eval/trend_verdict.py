"""The verdict on UFO's expected trend, computed from the measured trend — never assumed.

Used by the demo's report and by `ufo-video sweep`'s page, so it lives in eval/ (below both).
`interval_verdict` judges the same expectation with paired t intervals (a sweep over several
prompts and seeds), so that a trend is called only where the data show it.

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


def _direction(interval: dict, want: str) -> str:
    """"expected" / "wrong" when the interval lies wholly on one side of 0, else "unclear"."""
    if interval["low"] is None:
        return "unclear"
    sign = 1 if want == "up" else -1
    if sign * interval["low"] > 0 and sign * interval["high"] > 0:
        return "expected"
    if sign * interval["low"] < 0 and sign * interval["high"] < 0:
        return "wrong"
    return "unclear"


def _paired(values: dict, a: float, b: float, level: float) -> dict | None:
    from ufo_video.eval.paired_stats import paired_difference

    keys = [k for k in values.get(a, {}) if k in values.get(b, {})]
    if not keys:
        return None
    return paired_difference([values[b][k] for k in keys], [values[a][k] for k in keys], level)


def interval_verdict(rows: list[dict], expected: dict[str, str] | None = None, level: float = 0.95) -> dict:
    """The expected trend judged with intervals over paired videos (same checkpoint, prompt and
    seed at two weights): per group ("all", then each checkpoint) and metric, the change from the
    smallest to the largest weight and at each weight step, each with its t interval and whether
    it lies in the expected direction, the wrong one, or includes 0 ("unclear"). A group's trend
    "holds" when every metric's overall change is surely in the expected direction and no step
    surely goes the wrong way; "fails" when some change surely goes the wrong way; else it is
    "unclear" (more prompts or seeds would tell)."""
    expected = EXPECTED if expected is None else expected
    groups: dict[str, list[dict]] = {"all": list(rows)}
    for r in rows:
        groups.setdefault(str(r["checkpoint"]), []).append(r)
    out: dict = {"level": level, "groups": {}}
    for name, group in groups.items():
        weights = sorted({float(r["weight"]) for r in group})
        checks = []
        for metric, want in expected.items():
            values: dict[float, dict] = {}
            for r in group:
                if metric in r["metrics"]:
                    values.setdefault(float(r["weight"]), {})[(r["checkpoint"], r.get("sample", ""))] = float(r["metrics"][metric])
            overall = _paired(values, weights[0], weights[-1], level)
            steps = []
            for a, b in zip(weights, weights[1:]):
                iv = _paired(values, a, b, level)
                steps.append({"from": a, "to": b, "change": iv, "direction": "unclear" if iv is None else _direction(iv, want)})
            checks.append({"metric": metric, "kind": KIND.get(metric, ""), "want": want, "change": overall,
                           "direction": "unclear" if overall is None else _direction(overall, want), "steps": steps})  # fmt: skip
        wrong = any(c["direction"] == "wrong" or any(s["direction"] == "wrong" for s in c["steps"]) for c in checks)
        holds = all(c["direction"] == "expected" for c in checks) and not wrong
        out["groups"][name] = {"weights": weights, "verdict": "fails" if wrong else "holds" if holds else "unclear",
                               "checks": checks}  # fmt: skip
    out["verdict"] = out["groups"]["all"]["verdict"]
    out["statement"] = interval_statement(out["groups"]["all"], level)
    return out


def interval_statement(group: dict, level: float) -> str:
    w = group["weights"]
    head = {"holds": "The expected UFO trend HOLDS with confidence",
            "fails": "The expected UFO trend does NOT hold: some change surely goes the wrong way",
            "unclear": "The expected UFO trend is NOT SHOWN: some intervals include 0"}[group["verdict"]]  # fmt: skip
    parts = [f"{head} ({level:.0%} intervals over paired videos, alpha {_fmt(w[0])} -> {_fmt(w[-1])})."]
    for c in group["checks"]:
        iv = c["change"]
        text = "no pairs" if iv is None else f"{iv['mean']:+.4g}" + ("" if iv["low"] is None else f" [{iv['low']:+.4g}, {iv['high']:+.4g}]")
        bad = [f"{_fmt(s['from'])}->{_fmt(s['to'])}" for s in c["steps"] if s["direction"] == "wrong"]
        parts.append(f"{c['metric']} (expected {'up' if c['want'] == 'up' else 'down'}) changes by {text}: {c['direction']}"
                     + (f"; surely wrong way at {', '.join(bad)}" if bad else "") + ".")
    return " ".join(parts)
