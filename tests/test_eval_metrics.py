"""Metric maths against hand-computed values and known orderings on synthetic videos."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from ufo_video.errors import UfoError
from ufo_video.eval import metrics as M
from ufo_video.eval.summary import trend

F, H, W, SHIFT = 9, 64, 64, 3


def _texture(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.random((H + 80, W + 80, 3)).astype(np.float32), (0, 0), 2)
    return ((tex - tex.min()) / (tex.max() - tex.min()) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def videos() -> dict[str, np.ndarray]:
    tex = _texture()
    static = np.stack([tex[20 : 20 + H, 20 : 20 + W]] * F)
    # The crop window moves right by SHIFT px per frame, so the content moves left: dx = -SHIFT.
    translating = np.stack([tex[20 : 20 + H, 20 + SHIFT * t : 20 + SHIFT * t + W] for t in range(F)])
    flicker = np.stack([np.clip(static[0].astype(int) + (40 if t % 2 else 0), 0, 255).astype(np.uint8) for t in range(F)])
    noise = np.random.default_rng(1).integers(0, 256, (F, H, W, 3), dtype=np.uint8)
    return {"static": static, "translating": translating, "flicker": flicker, "noise": noise}


@pytest.fixture(scope="module")
def scores(videos) -> dict[str, dict]:
    return {name: M.evaluate_frames(v) for name, v in videos.items()}


def _const(value: int, shape=(4, 4)) -> np.ndarray:
    return np.full((*shape, 3), value, dtype=np.uint8)


def test_psnr_hand_computed():
    a, b = _const(100), _const(110)
    assert M.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100.0))
    c = a.copy()
    c[0, 0, 0] = 104  # one value of 48 off by 4: MSE = 16 / 48
    assert M.psnr(a, c) == pytest.approx(10 * math.log10(255**2 / (16 / 48)))
    assert M.psnr(a, a) == M.PSNR_CAP_DB
    assert M.temporal_psnr(np.stack([a, b, b])) == pytest.approx((M.psnr(a, b) + M.PSNR_CAP_DB) / 2)


def test_ssim_hand_computed():
    a, b = _const(100), _const(110)
    # Constant frames: zero local variance, so SSIM = (2ab + C1) / (a² + b² + C1).
    expected = (2 * 100 * 110 + M.SSIM_C1) / (100**2 + 110**2 + M.SSIM_C1)
    assert M.ssim(a, b) == pytest.approx(expected)
    assert M.ssim(a, a) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    x, y = (rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2))
    assert M.ssim(x, y) == pytest.approx(M.ssim(y, x))
    assert M.ssim(x, y) < 0.2
    inverted = 255 - x  # anti-correlated structure: SSIM below zero
    assert M.ssim(x, inverted) < 0


def test_brightness_and_sharpness_flicker_hand_computed():
    frames = np.stack([_const(100), _const(140), _const(100)])
    assert M.brightness_flicker(frames) == pytest.approx(40 / 255)
    assert M.sharpness_flicker(frames) == 0.0  # flat frames have no detail to flicker
    checker = (np.indices((16, 16)).sum(0) % 2 * 200 + 20).astype(np.uint8)
    sharp = np.repeat(checker[..., None], 3, axis=2)
    soft = (sharp.astype(np.float64) - 120) * 0.5 + 120  # half contrast: Laplacian variance x 1/4
    pair = np.stack([sharp, soft.astype(np.uint8)])
    # Laplacian of a ±100 checker: ±800 inside (4 opposite neighbours), ±600 on edges and ±400 at
    # corners (reflected neighbours equal the pixel); balanced signs, so the variance is the mean square.
    assert M.sharpness(pair[0]) == pytest.approx((196 * 800**2 + 56 * 600**2 + 4 * 400**2) / 256)
    assert M.sharpness(pair[1]) == pytest.approx(M.sharpness(pair[0]) / 4)
    assert M.sharpness_flicker(pair) == pytest.approx(0.75)


def test_static_video_is_perfectly_consistent_and_still(scores):
    s = scores["static"]
    assert s["ssim"] == pytest.approx(1.0)
    assert s["psnr_db"] == M.PSNR_CAP_DB
    assert s["warp_error"] == 0.0
    assert s["brightness_flicker"] == 0.0 and s["sharpness_flicker"] == 0.0
    assert s["flow_px"] == 0.0 and s["flow_norm"] == 0.0 and s["dynamic_pairs"] == 0.0
    assert s["is_dynamic"] is False


def test_flow_recovers_known_shift(videos, scores):
    flows = M.optical_flows(videos["translating"])
    assert flows.shape == (F - 1, H, W, 2)
    inner = flows[:, 8:-8, 8:-8]  # away from the borders, where content enters and leaves
    assert inner[..., 0].mean() == pytest.approx(-SHIFT, abs=0.3)
    assert abs(inner[..., 1].mean()) < 0.3
    assert scores["translating"]["flow_px"] == pytest.approx(SHIFT, rel=0.15)
    assert scores["translating"]["flow_norm"] == pytest.approx(scores["translating"]["flow_px"] / math.hypot(H, W))
    assert scores["translating"]["is_dynamic"] is True


def test_warp_error_compensates_motion(videos, scores):
    trans = videos["translating"]
    unwarped = np.abs(np.diff(trans.astype(np.float64), axis=0)).mean() / 255
    assert scores["translating"]["warp_error"] < unwarped / 10
    zero_flow = np.zeros((F - 1, H, W, 2), dtype=np.float32)
    assert M.warp_error(trans, zero_flow) == pytest.approx(unwarped)


def test_known_orderings(scores):
    st, tr, fl, no = (scores[k] for k in ("static", "translating", "flicker", "noise"))
    for key in ("ssim", "psnr_db"):
        assert st[key] > tr[key] > no[key]
    assert st["warp_error"] < tr["warp_error"] < no["warp_error"]
    assert st["flow_px"] == 0 < tr["flow_px"]
    assert fl["brightness_flicker"] > 0.1 > st["brightness_flicker"]
    assert tr["brightness_flicker"] < fl["brightness_flicker"]
    assert no["sharpness_flicker"] > st["sharpness_flicker"]


def test_dynamic_rule_counts_pairs():
    frames = np.zeros((17, 32, 32, 3), dtype=np.uint8)
    threshold = M.dynamic_threshold_px(32, 32)
    assert threshold == pytest.approx(6.0 * 32 / 256)
    assert M.dynamic_threshold_px(256, 512, fps=4) == pytest.approx(12.0)
    needed = round(4 * 17 / 16)  # 4 moving pairs of 16
    flows = np.zeros((16, 32, 32, 2), dtype=np.float32)
    flows[: needed - 1, ..., 0] = threshold * 1.5
    below = M.dynamic_degree(frames, flows)
    assert below["is_dynamic"] is False and below["dynamic_pairs"] == pytest.approx((needed - 1) / 16)
    flows[needed - 1, ..., 0] = threshold * 1.5
    assert M.dynamic_degree(frames, flows)["is_dynamic"] is True
    # Only the top 5 % of magnitudes count: a small fast object is motion.
    spot = np.zeros((16, 32, 32, 2), dtype=np.float32)
    spot[:, :6, :10, 0] = threshold * 2  # 60 of 1024 pixels
    assert M.dynamic_degree(frames, spot)["dynamic_pairs"] == 1.0


def test_definitions_cover_every_metric(scores):
    assert set(scores["noise"]) == set(M.DEFINITIONS)
    for d in M.DEFINITIONS.values():
        assert d["better"] in ("higher", "lower") and d["range"] and d["meaning"]
    for s in scores.values():
        assert all(math.isfinite(v) for v in s.values())


def test_bad_frames_are_rejected():
    with pytest.raises(UfoError, match="at least 2 frames"):
        M.evaluate_frames(np.zeros((1, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(UfoError, match="uint8"):
        M.evaluate_frames(np.zeros((3, 8, 8, 3), dtype=np.float32))


def test_subsample_to_fps_like_vbench():
    frames = np.arange(48).reshape(48, 1, 1, 1)
    assert len(M.subsample_to_fps(frames, 24)) == 16
    assert len(M.subsample_to_fps(frames, 8)) == 48
    assert len(M.subsample_to_fps(frames, None)) == 48


def test_trend_over_weights():
    rows = [
        (0.2, {"ssim": 0.9, "flow_px": 1.0, "is_dynamic": False, "x": 1.0}),
        (0.0, {"ssim": 0.7, "flow_px": 3.0, "is_dynamic": True, "x": 1.0}),
        (0.1, {"ssim": 0.8, "flow_px": 2.0, "is_dynamic": True, "x": 2.0}),
        (0.1, {"ssim": 0.6, "flow_px": 2.0, "is_dynamic": False, "x": 0.0}),
    ]
    t = trend(rows)
    assert t["weights"] == [0.0, 0.1, 0.2]
    ssim = t["metrics"]["ssim"]
    assert ssim["values"] == pytest.approx([0.7, 0.7, 0.9])  # 0.1 is the mean of 0.8 and 0.6
    assert ssim["non_decreasing"] and not ssim["non_increasing"] and ssim["direction"] == "up"
    assert ssim["agrees_with_better"] is True
    flow = t["metrics"]["flow_px"]
    assert flow["direction"] == "down" and flow["agrees_with_better"] is False
    assert t["metrics"]["is_dynamic"]["values"] == [1.0, 0.5, 0.0]
    assert t["metrics"]["x"]["direction"] == "flat" and t["metrics"]["x"]["better"] is None
    mixed = trend([(0, {"ssim": 1.0}), (1, {"ssim": 2.0}), (2, {"ssim": 1.5})])
    assert mixed["metrics"]["ssim"]["direction"] == "mixed"
    assert trend([(0, {"ssim": 1.0}), (1, {"ssim": 2.0}), (2, {"ssim": 1.5})], tol=0.6)["metrics"]["ssim"]["direction"] == "up"


def test_trend_skips_and_rejects():
    t = trend([(0, {"ssim": 1.0, "a": 1.0}), (1, {"ssim": float("nan")})])
    assert set(t["skipped"]) == {"ssim", "a"} and t["metrics"] == {}
    with pytest.raises(UfoError, match="two or more different weights"):
        trend([(0.1, {"ssim": 1.0}), (0.1, {"ssim": 0.5})])


def test_dynamic_decision_follows_vbench_frame_rate_rule():
    """1 px/frame is below the 1.5 px threshold of a 64x64 clip at 8 fps; at 24 fps VBench
    keeps every 3rd frame, so pairs move 3 px and the clip is dynamic. Flow stats are per frame."""
    tex = _texture()
    slow = np.stack([tex[20 : 20 + H, 20 + t : 20 + t + W] for t in range(13)])
    at8, at24 = M.evaluate_frames(slow, fps=8), M.evaluate_frames(slow, fps=24)
    assert at8["is_dynamic"] is False and at8["dynamic_pairs"] == 0.0
    assert at24["is_dynamic"] is True and at24["dynamic_pairs"] == 1.0
    assert at8["flow_px"] == at24["flow_px"] == pytest.approx(1.0, abs=0.1)
