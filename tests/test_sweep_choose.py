"""The recommendation rule of `ufo_video.eval.choose` on hand-computed sweeps."""

from __future__ import annotations

import pytest

from ufo_video.errors import UfoError
from ufo_video.eval.choose import ChoiceRule, recommend


def row(ckpt: str, weight: float, warp: float, flow: float, ssim: float = 0.9) -> dict:
    return {"checkpoint": ckpt, "weight": weight, "metrics": {"warp_error": warp, "flow_px": flow, "ssim": ssim}}


# base: warp 0.10, flow 2.0 (seen from both checkpoints, identical)
SWEEP = [
    row("A", 0.0, 0.10, 2.0), row("B", 0.0, 0.10, 2.0),
    row("A", 0.1, 0.08, 1.8),   # motion share 0.90
    row("A", 0.2, 0.05, 1.2),   # 0.60
    row("B", 0.1, 0.07, 1.7),   # 0.85
    row("B", 0.2, 0.04, 1.0),   # 0.50
]  # fmt: skip


def test_default_rule_picks_lowest_warp_error_that_keeps_80_percent_motion() -> None:
    r = recommend(SWEEP)
    assert (r["checkpoint"], r["weight"]) == ("B", 0.1)
    assert r["base"] == {"consistency": 0.10, "motion": 2.0}
    shares = {(c["checkpoint"], c["weight"]): c["motion_share"] for c in r["candidates"]}
    assert shares[("A", 0.1)] == pytest.approx(0.9) and shares[("B", 0.2)] == pytest.approx(0.5)
    assert [c["eligible"] for c in r["candidates"]] == [True, True, False, False]  # A.1 B.1 A.2 B.2
    assert "80%" in r["rule"] and "warp_error" in r["rule"]


def test_a_lower_motion_share_allows_stronger_settings() -> None:
    assert (recommend(SWEEP, ChoiceRule(keep_motion=0.6))["checkpoint"], recommend(SWEEP, ChoiceRule(keep_motion=0.6))["weight"]) == ("A", 0.2)
    r = recommend(SWEEP, ChoiceRule(keep_motion=0.5))
    assert (r["checkpoint"], r["weight"]) == ("B", 0.2)


def test_nothing_keeps_the_motion_means_the_base() -> None:
    r = recommend(SWEEP, ChoiceRule(keep_motion=0.95))
    assert r["checkpoint"] is None and r["weight"] == 0.0 and "95%" in r["reason"]


def test_a_higher_is_better_metric_and_a_setting_worse_than_base() -> None:
    rows = [row("A", 0.0, 0.1, 2.0, ssim=0.80), row("A", 0.1, 0.1, 2.0, ssim=0.79), row("A", 0.2, 0.1, 1.9, ssim=0.78)]
    r = recommend(rows, ChoiceRule(consistency="ssim"))
    assert r["checkpoint"] is None and "more consistent than the base" in r["reason"]
    rows.append(row("B", 0.1, 0.1, 1.7, ssim=0.85))
    assert recommend(rows, ChoiceRule(consistency="ssim"))["checkpoint"] == "B"


def test_ties_go_to_the_smaller_weight_then_the_first_checkpoint_and_seeds_are_averaged() -> None:
    rows = [row("A", 0.0, 0.10, 2.0), row("B", 0.2, 0.05, 2.0), row("A", 0.2, 0.05, 2.0), row("A", 0.1, 0.05, 2.0),
            row("B", 0.1, 0.04, 2.0), row("B", 0.1, 0.06, 2.0)]  # B@0.1 averages to 0.05  # fmt: skip
    r = recommend(rows)
    assert (r["checkpoint"], r["weight"]) == ("A", 0.1)
    b = next(c for c in r["candidates"] if (c["checkpoint"], c["weight"]) == ("B", 0.1))
    assert b["consistency"] == pytest.approx(0.05)


def test_a_static_base_has_no_motion_share_and_bad_input_is_named() -> None:
    r = recommend([row("A", 0.0, 0.10, 0.0), row("A", 0.1, 0.05, 0.0)])
    assert r["checkpoint"] == "A" and r["candidates"][0]["motion_share"] is None
    with pytest.raises(UfoError, match="include weight 0"):
        recommend([row("A", 0.1, 0.05, 1.0)])
    with pytest.raises(UfoError, match="keep_motion"):
        ChoiceRule(keep_motion=1.5)
    with pytest.raises(UfoError, match="unknown"):
        ChoiceRule(consistency="sharpness")
    with pytest.raises(UfoError, match="not a finite number"):
        recommend([row("A", 0.0, float("nan"), 1.0)])
