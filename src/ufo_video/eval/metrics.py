"""Video quality metrics that answer "does my UFO LoRA do anything?" on CPU, without weights.

The UFO paper reports that as the LoRA weight α grows, temporal consistency and frame quality
rise while motion falls (VBench temporal-quality dimensions and dynamic degree). VBench needs
several large networks; the metrics here measure the same three things with classical image
processing so a user can check the trend on any machine:

- temporal consistency: SSIM and PSNR between consecutive frames, and the error left after
  warping frame t+1 back onto frame t with optical flow (motion-compensated, so a smooth pan
  is not punished the way it is by plain SSIM/PSNR);
- flicker: frame-to-frame jumps of mean brightness and of high-frequency energy (sharpness);
- dynamics: optical-flow magnitude and a VBench-style "is dynamic" decision.

Every function takes uint8 RGB frames [F, H, W, 3] (F >= 2) and returns plain Python floats
(never inf or NaN) so results can go straight to JSON. `DEFINITIONS` documents each key of
`evaluate_frames` (range, direction, meaning); the CLI prints it with every report.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ufo_video.errors import UfoError

# PSNR of two identical frames is infinite; reporting a finite cap keeps means and JSON valid.
PSNR_CAP_DB = 100.0
# SSIM as defined by Wang et al. (2004): 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = (0.01 * 255.0) ** 2
SSIM_C2 = (0.03 * 255.0) ** 2
# Farneback optical-flow settings (OpenCV's documented example values); pyramid depth adapts
# to the frame size so that the coarsest level stays >= 16 px.
FLOW_PYR_SCALE = 0.5
FLOW_WINSIZE = 15
FLOW_ITERATIONS = 3
FLOW_POLY_N = 5
FLOW_POLY_SIGMA = 1.2
# VBench dynamic-degree rule (vbench/dynamic_degree.py), reproduced with Farneback flow:
# score of a frame pair = mean of its top 5 % flow magnitudes; a pair "moves" when its score
# exceeds 6 px scaled by min(H, W) / 256 (and by max(1, 8 / fps) for videos under 8 fps);
# a video is dynamic when at least round(4 * F / 16) pairs move (F frames, at least 1 pair).
DYNAMIC_TOP_FRACTION = 0.05
DYNAMIC_BASE_THRESHOLD_PX = 6.0
DYNAMIC_REFERENCE_SIDE = 256.0
DYNAMIC_REFERENCE_FPS = 8.0

# BT.601 luma, the usual grey conversion for SSIM/PSNR on RGB video.
_LUMA = np.array([0.299, 0.587, 0.114])

DEFINITIONS: dict[str, dict[str, str]] = {
    "ssim": {
        "range": "[-1, 1] (1 = identical consecutive frames)",
        "better": "higher",
        "meaning": "mean SSIM (Gaussian 11x11, sigma 1.5, on BT.601 luma) between consecutive frames; "
        "temporal consistency, punishes motion too",
    },
    "psnr_db": {
        "range": f"[0, {PSNR_CAP_DB:g}] dB (identical frames are capped at {PSNR_CAP_DB:g})",
        "better": "higher",
        "meaning": "mean PSNR (peak 255, MSE over RGB) between consecutive frames; temporal consistency",
    },
    "warp_error": {
        "range": "[0, 1] (0 = frame t+1 warped by the flow reproduces frame t exactly)",
        "better": "lower",
        "meaning": "mean absolute RGB error / 255 after warping frame t+1 onto frame t with Farneback flow, "
        "over pixels whose source lies inside the frame; motion-compensated consistency",
    },
    "brightness_flicker": {
        "range": "[0, 1]",
        "better": "lower",
        "meaning": "mean |change of mean luma| / 255 between consecutive frames",
    },
    "sharpness_flicker": {
        "range": "[0, 1]",
        "better": "lower",
        "meaning": "mean relative change |s1 - s0| / max(s0, s1) of Laplacian variance s (high-frequency "
        "energy) between consecutive frames; textures that appear and vanish",
    },
    "flow_px": {
        "range": "[0, inf) pixels per frame",
        "better": "higher",
        "meaning": "mean Farneback optical-flow magnitude over all pixels and frame pairs; amount of motion "
        "(UFO trades some of it for consistency)",
    },
    "flow_norm": {
        "range": "[0, 1] (fraction of the frame diagonal per frame)",
        "better": "higher",
        "meaning": "flow_px divided by the frame diagonal, comparable across resolutions",
    },
    "dynamic_pairs": {
        "range": "[0, 1]",
        "better": "higher",
        "meaning": "fraction of frame pairs whose top-5% flow magnitude exceeds the VBench-style threshold "
        f"{DYNAMIC_BASE_THRESHOLD_PX:g} px * min(H, W) / {DYNAMIC_REFERENCE_SIDE:g}",
    },
    "is_dynamic": {
        "range": "false / true (0 / 1 when averaged)",
        "better": "higher",
        "meaning": "VBench-style dynamic-degree decision: at least round(4 * F / 16) (>= 1) moving pairs; "
        "the mean over videos is VBench's dynamic degree",
    },
}


# Keys of `evaluate_frames` that measure motion (the rest measure consistency / flicker): UFO is
# expected to lower these as its weight grows.
MOTION_METRICS = ("flow_px", "flow_norm", "dynamic_pairs", "is_dynamic")


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Validate a video for temporal metrics: uint8 [F, H, W, 3] with at least two frames."""
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise UfoError(f"expected uint8 RGB frames [F, H, W, 3], got {arr.dtype} {arr.shape}")
    if arr.shape[0] < 2:
        raise UfoError(f"temporal metrics need at least 2 frames, got {arr.shape[0]}")
    if arr.shape[1] < 2 or arr.shape[2] < 2:
        raise UfoError(f"frames of {arr.shape[1]}x{arr.shape[2]} pixels are too small to evaluate")
    return arr


def to_luma(frame: np.ndarray) -> np.ndarray:
    """BT.601 luma of one RGB frame as float64 [H, W] in [0, 255]."""
    return np.asarray(frame, dtype=np.float64) @ _LUMA


def _blur(x: np.ndarray) -> np.ndarray:
    # Reflective borders keep a constant image constant, whatever its size.
    return cv2.GaussianBlur(x, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)


def ssim(frame_a: np.ndarray, frame_b: np.ndarray) -> float:
    """SSIM of two RGB frames on their luma: mean over pixels of
    ((2 mu_a mu_b + C1)(2 cov_ab + C2)) / ((mu_a^2 + mu_b^2 + C1)(var_a + var_b + C2)),
    local statistics from the Gaussian window. Range [-1, 1]; 1 iff the frames are equal."""
    a, b = to_luma(frame_a), to_luma(frame_b)
    mu_a, mu_b = _blur(a), _blur(b)
    var_a = _blur(a * a) - mu_a * mu_a
    var_b = _blur(b * b) - mu_b * mu_b
    cov = _blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_a * mu_a + mu_b * mu_b + SSIM_C1) * (var_a + var_b + SSIM_C2)
    return float(np.mean(num / den))


def psnr(frame_a: np.ndarray, frame_b: np.ndarray) -> float:
    """10·log10(255² / MSE) over all RGB values, capped at PSNR_CAP_DB (identical frames)."""
    diff = np.asarray(frame_a, dtype=np.float64) - np.asarray(frame_b, dtype=np.float64)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(255.0**2 / mse))


def temporal_ssim(frames: np.ndarray) -> float:
    """Mean SSIM over consecutive frame pairs (see `ssim`). Higher = more consistent."""
    arr = check_frames(frames)
    return float(np.mean([ssim(arr[t], arr[t + 1]) for t in range(len(arr) - 1)]))


def temporal_psnr(frames: np.ndarray) -> float:
    """Mean of the per-pair capped PSNR over consecutive frames (dB). Higher = more consistent."""
    arr = check_frames(frames)
    return float(np.mean([psnr(arr[t], arr[t + 1]) for t in range(len(arr) - 1)]))


def _flow_levels(height: int, width: int) -> int:
    return int(max(0, min(5, math.floor(math.log2(max(1, min(height, width)) / 16)))))


def optical_flows(frames: np.ndarray) -> np.ndarray:
    """Farneback flow from frame t to t+1 for every pair: float32 [F-1, H, W, 2] (dx, dy), such
    that frame_t(y, x) ≈ frame_{t+1}(y + dy, x + dx). Identical frames get exactly zero flow
    (that is their true motion; Farneback's polynomial fit would report ~0.1 px of noise)."""
    arr = check_frames(frames)
    h, w = arr.shape[1:3]
    levels = _flow_levels(h, w)
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in arr]
    flows = np.zeros((len(arr) - 1, h, w, 2), dtype=np.float32)
    for t in range(len(arr) - 1):
        if np.array_equal(arr[t], arr[t + 1]):
            continue
        flows[t] = cv2.calcOpticalFlowFarneback(
            grey[t], grey[t + 1], None, FLOW_PYR_SCALE, levels, FLOW_WINSIZE,
            FLOW_ITERATIONS, FLOW_POLY_N, FLOW_POLY_SIGMA, 0,
        )
    return flows


def _flows_for(frames: np.ndarray, flows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    arr = check_frames(frames)
    if flows is None:
        flows = optical_flows(arr)
    expected = (arr.shape[0] - 1, arr.shape[1], arr.shape[2], 2)
    if flows.shape != expected:
        raise ValueError(f"flows of shape {flows.shape} do not match frames {arr.shape} (expected {expected})")
    return arr, flows


def warp_error(frames: np.ndarray, flows: np.ndarray | None = None) -> float:
    """Motion-compensated error: frame t+1 is sampled at (x + dx, y + dy) (bilinear, cv2.remap)
    to predict frame t; the mean absolute RGB difference / 255 over pixels whose sample point
    lies inside the frame, averaged over pairs. Range [0, 1], lower = more consistent. A pair
    whose flow sends every pixel outside the frame counts as 1 (worst), never as 0."""
    arr, flows = _flows_for(frames, flows)
    h, w = arr.shape[1:3]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    errors = []
    for t in range(len(arr) - 1):
        map_x = grid_x + flows[t, ..., 0]
        map_y = grid_y + flows[t, ..., 1]
        valid = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
        if not valid.any():
            errors.append(1.0)
            continue
        warped = cv2.remap(arr[t + 1], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        diff = np.abs(warped.astype(np.float64) - arr[t].astype(np.float64))[valid]
        errors.append(float(diff.mean() / 255.0))
    return float(np.mean(errors))


def brightness_flicker(frames: np.ndarray) -> float:
    """Mean over consecutive pairs of |mean luma(t+1) − mean luma(t)| / 255. Range [0, 1],
    lower = steadier exposure (0 for a static video)."""
    arr = check_frames(frames)
    means = np.array([to_luma(f).mean() for f in arr])
    return float(np.mean(np.abs(np.diff(means))) / 255.0)


def sharpness(frame: np.ndarray) -> float:
    """High-frequency energy of one frame: variance of the 4-neighbour Laplacian
    [[0, 1, 0], [1, -4, 1], [0, 1, 0]] of its luma (OpenCV ksize=1; its ksize=3 kernel is blind
    to one-pixel checkerboards)."""
    return float(cv2.Laplacian(to_luma(frame), cv2.CV_64F, ksize=1, borderType=cv2.BORDER_REFLECT).var())


def sharpness_flicker(frames: np.ndarray) -> float:
    """Mean over consecutive pairs of |s(t+1) − s(t)| / max(s(t), s(t+1)) with s = `sharpness`
    (0 when both frames are flat). Range [0, 1], lower = detail stays put."""
    arr = check_frames(frames)
    s = np.array([sharpness(f) for f in arr])
    top = np.maximum(s[:-1], s[1:])
    rel = np.divide(np.abs(np.diff(s)), top, out=np.zeros_like(top), where=top > 0)
    return float(np.mean(rel))


def dynamic_threshold_px(height: int, width: int, fps: float | None = None) -> float:
    """VBench's per-pair motion threshold: 6 px · min(H, W) / 256 · max(1, 8 / fps)."""
    factor = 1.0 if fps is None else max(1.0, DYNAMIC_REFERENCE_FPS / fps)
    return factor * DYNAMIC_BASE_THRESHOLD_PX * min(height, width) / DYNAMIC_REFERENCE_SIDE


def dynamic_degree(frames: np.ndarray, flows: np.ndarray | None = None, fps: float | None = None) -> dict:
    """Amount of motion. Returns
    - flow_px: mean flow magnitude over all pixels and pairs (pixels per frame), >= 0;
    - flow_norm: flow_px / frame diagonal;
    - dynamic_pairs: fraction of pairs whose mean top-5 % magnitude exceeds
      `dynamic_threshold_px` (VBench's per-pair score, Farneback instead of RAFT);
    - is_dynamic: at least max(1, round(4·F/16)) moving pairs (VBench's rule; the minimum of
      one pair is ours, so a 2-frame static clip is never called dynamic).
    VBench also subsamples videos above 8 fps to about 8 fps first; pass frames that way
    (`subsample_to_fps`) to match it. Higher = more motion; all zero / false for a static video."""
    arr, flows = _flows_for(frames, flows)
    h, w = arr.shape[1:3]
    mag = np.hypot(flows[..., 0], flows[..., 1]).reshape(len(flows), -1)
    top_k = max(1, int(h * w * DYNAMIC_TOP_FRACTION))
    pair_scores = np.sort(mag, axis=1)[:, -top_k:].mean(axis=1)
    threshold = dynamic_threshold_px(h, w, fps)
    moving = int(np.count_nonzero(pair_scores > threshold))
    needed = max(1, round(4 * len(arr) / 16))
    flow_px = float(mag.mean())
    return {
        "flow_px": flow_px,
        "flow_norm": flow_px / math.hypot(h, w),
        "dynamic_pairs": moving / len(flows),
        "is_dynamic": moving >= needed,
    }


def subsample_to_fps(frames: np.ndarray, fps: float | None, target_fps: float = DYNAMIC_REFERENCE_FPS) -> np.ndarray:
    """Keep every round(fps / 8)-th frame, as VBench does before measuring dynamics."""
    if fps is None or fps <= 0:
        return frames
    step = max(1, round(fps / target_fps))
    return frames[::step]


def evaluate_frames(frames: np.ndarray, fps: float | None = None) -> dict:
    """Every metric of `DEFINITIONS` for one video (flow computed once and shared). `fps`, when
    known, is used only by the dynamic-degree decision (VBench's frame subsampling and
    low-frame-rate threshold factor); a clip too short to subsample (fewer than 2 frames left)
    is judged on all its frames."""
    arr = check_frames(frames)
    flows = optical_flows(arr)
    dyn_frames = subsample_to_fps(arr, fps)
    if len(dyn_frames) >= 2 and len(dyn_frames) != len(arr):
        dynamics = dynamic_degree(dyn_frames, fps=fps)
    else:
        dynamics = dynamic_degree(arr, flows, fps=fps)
    # flow_px / flow_norm always describe every consecutive pair of the video as given.
    mag = np.hypot(flows[..., 0], flows[..., 1])
    flow_px = float(mag.mean())
    result = {
        "ssim": temporal_ssim(arr),
        "psnr_db": temporal_psnr(arr),
        "warp_error": warp_error(arr, flows),
        "brightness_flicker": brightness_flicker(arr),
        "sharpness_flicker": sharpness_flicker(arr),
        "flow_px": flow_px,
        "flow_norm": flow_px / math.hypot(*arr.shape[1:3]),
        "dynamic_pairs": dynamics["dynamic_pairs"],
        "is_dynamic": dynamics["is_dynamic"],
    }
    return result
