"""The recommendation rule of `ufo_video.eval.choose` on hand-made paired sweeps, and the
statistics of `ufo_video.eval.paired_stats` against hand-computed values."""

from __future__ import annotations

import math
import random

import pytest

from ufo_video.errors import UfoError
from ufo_video.eval import paired_stats as ps
from ufo_video.eval.choose import ChoiceRule, recommend
from ufo_video.eval.trend_verdict import interval_verdict


def row(ckpt: str, weight: float, sample: str, warp: float, flow: float, prompt: str = "") -> dict:
    return {"checkpoint": ckpt, "weight": weight, "sample": sample, "prompt": prompt or sample[:2],
            "metrics": {"warp_error": warp, "flow_px": flow, "ssim": 1 - warp}}  # fmt: skip


SAMPLES = [f"p{p}-seed{s}" for p in range(1, 4) for s in range(1, 4)]  # 3 prompts x 3 seeds


def sweep(effect, flow_share=1.0, seed=0, spread=0.01, weights=(0.5, 1.0)) -> list[dict]:
    """Base warp_error per sample (prompt level + seed noise of sd `spread`); each setting adds
    effect(weight, rng) to it (negative = more consistent) and scales the motion."""
    rng = random.Random(seed)
    rows = []
    for i, s in enumerate(SAMPLES):
        warp, flow = 0.05 + 0.02 * (i // 3) + rng.gauss(0, spread), 2.0 + rng.gauss(0, 0.1)
        rows.append(row("A", 0.0, s, warp, flow))
        for w in weights:
            rows.append(row("A", w, s, warp + effect(w, rng), flow * flow_share))
    return rows


def test_t_quantiles_and_intervals_match_hand_computed_values() -> None:
    for df, t in ((1, 12.7062), (2, 4.3027), (4, 2.7764), (8, 2.3060), (30, 2.0423)):
        assert ps.t_quantile(0.95, df) == pytest.approx(t, abs=1e-4)  # printed t tables
    # [1, 2, 3, 4]: mean 2.5, sd sqrt(5/3), half width 3.1824 * 1.29099 / 2
    i = ps.mean_interval([1, 2, 3, 4])
    assert (i["mean"], i["sd"]) == (2.5, pytest.approx(math.sqrt(5 / 3)))
    assert (i["low"], i["high"]) == (pytest.approx(0.44574, abs=1e-5), pytest.approx(4.55426, abs=1e-5))
    assert ps.paired_difference([3, 5], [1, 2])["mean"] == 2.5 and ps.mean_interval([7])["low"] is None
    # ratio 2 / (8/3) = 0.75; s - r b = [-0.5, 0.5, 0], sd 0.5; half = 4.3027 * 0.5 / (sqrt(3) * 8/3)
    r = ps.ratio_interval([1, 2, 3], [2, 2, 4])
    assert r["ratio"] == 0.75 and r["low"] == pytest.approx(0.28422, abs=1e-5) and r["high"] == pytest.approx(1.21578, abs=1e-5)
    assert ps.ratio_interval([1, 1], [0, 0])["ratio"] is None
    # pooled within-group sd: groups [1, 3] and [2, 4, 6]: (2 + 8) / (1 + 2) -> sqrt(10/3)
    assert ps.seed_spread([[1, 3], [2, 4, 6], [9]]) == pytest.approx(math.sqrt(10 / 3)) and ps.seed_spread([[1]]) is None
    assert ps.simultaneous_level(0.95, 5) == pytest.approx(0.99)


def test_a_real_consistency_effect_is_recommended_with_its_interval() -> None:
    r = recommend(sweep(lambda w, rng: -0.02 * w + rng.gauss(0, 0.002), flow_share=0.95))
    assert (r["checkpoint"], r["weight"]) == ("A", 1.0)
    best = next(c for c in r["candidates"] if c["weight"] == 1.0)
    g = best["gain"]
    assert g["low"] > r["min_effect"] > 0 and g["low"] < g["mean"] < g["high"] and g["mean"] == pytest.approx(0.02, abs=0.003)
    assert best["motion_kept"]["ratio"] == pytest.approx(0.95) and best["n"] == 9
    assert "[" in r["reason"] and "motion kept 95%" in r["reason"] and "seed-to-seed" in r["min_effect_source"]


def test_no_effect_and_noise_of_the_seed_spread_are_never_recommended() -> None:
    assert recommend(sweep(lambda w, rng: 0.0))["checkpoint"] is None
    picked = [recommend(sweep(lambda w, rng: rng.gauss(0, 0.01), seed=k))["checkpoint"] for k in range(200)]
    assert picked.count(None) >= 195  # the simultaneous 95 % bound (one-sided: 2.5 %); here none at all is typical
    r = recommend(sweep(lambda w, rng: rng.gauss(0, 0.01), seed=1))
    assert r["reason"].startswith("no setting beats the base reliably: the largest gain")


def test_a_sure_but_tiny_gain_is_below_the_minimum_effect_and_motion_must_be_kept() -> None:
    tiny = sweep(lambda w, rng: -4e-6)  # the 0.151507 vs 0.151511: exact, but meaningless
    r = recommend(tiny)
    assert r["checkpoint"] is None and "minimum effect" in r["reason"]
    assert recommend(tiny, ChoiceRule(min_effect=1e-6))["checkpoint"] == "A"  # when the user says it matters
    frozen = sweep(lambda w, rng: -0.03 * w, flow_share=0.5)
    assert recommend(frozen)["checkpoint"] is None and "motion kept is not surely >= 80%" in recommend(frozen)["reason"]
    assert recommend(frozen, ChoiceRule(keep_motion=0.4))["weight"] == 1.0


def test_ties_go_to_the_smaller_weight_and_bad_input_is_named() -> None:
    r = recommend(sweep(lambda w, rng: -0.02, flow_share=1.0))
    assert r["weight"] == 0.5
    with pytest.raises(UfoError, match="include weight 0"):
        recommend([row("A", 0.1, "s", 0.05, 1.0)])
    with pytest.raises(UfoError, match="keep_motion"):
        ChoiceRule(keep_motion=1.5)
    with pytest.raises(UfoError, match="min_effect"):
        ChoiceRule(min_effect=-1)
    with pytest.raises(UfoError, match="unknown"):
        ChoiceRule(consistency="sharpness")
    with pytest.raises(UfoError, match="not a finite number"):
        recommend([row("A", 0.0, "s", float("nan"), 1.0), row("A", 0.1, "s", 0.1, 1.0)])


def test_the_trend_verdict_gets_intervals() -> None:
    good = interval_verdict(sweep(lambda w, rng: -0.02 * w + rng.gauss(0, 0.001), flow_share=1.0),
                            expected={"warp_error": "down", "ssim": "up"})  # fmt: skip
    assert good["verdict"] == "holds" and "HOLDS with confidence" in good["statement"]
    check = good["groups"]["all"]["checks"][0]
    assert check["change"]["high"] < 0 and [s["direction"] for s in check["steps"]] == ["expected", "expected"]
    noise = interval_verdict(sweep(lambda w, rng: rng.gauss(0, 1e-4)), expected={"warp_error": "down"})
    assert noise["verdict"] == "unclear" and "NOT SHOWN" in noise["statement"]
    wrong = interval_verdict(sweep(lambda w, rng: 0.02 * w), expected={"warp_error": "down"})
    assert wrong["verdict"] == "fails" and "0->0.5" in wrong["statement"]
