"""fp8_error: how far a transformer block's output moves when its Linear weights are stored in
fp8, plain e4m3 (layerwise casting: `train.fp8_base`, `model_cpu_offload_and_qfloat8`) against
scaled e4m3 (a scale per 64 inputs: `train.fp8_scaled`, `model_cpu_offload_and_fp8_scaled`).

One pre-norm DiT block at a 14B-class width ("small": hidden 5120, 40 heads, ffn 13824, the
width of the 14B video models; "smoke": 256 / 4 / 688): self-attention (q, k, v, out) and a
GELU feed-forward, residuals around both. Weights are drawn like a trained model's: N(0, 0.02)
times a log-normal per-input-channel factor (trained Linears have outlier channels, which is what
plain e4m3 rounds worst); the input is N(0, 1) tokens with log-normal channel scales too.
Reported: ||y_fp8 - y_bf16|| / ||y_bf16|| for both (weights stored in bf16 or fp8, the block
computed in fp32 on the CPU so only the storage differs); the ratio is
scaled over plain (below 1: scaled is closer to bf16). Not a target: a figure for the docs.
"""

from __future__ import annotations

import math
import time

import torch
from torch.nn import functional as F

from ufo_video.bench.measure import Spread
from ufo_video.bench.results import CaseResult, Target
from ufo_video.bench.workspace import Workspace
from ufo_video.models.fp8_scaled import FP8, dequantize_blockwise, quantize_blockwise, relative_error

WIDTHS = {"small": dict(dim=5120, heads=40, ffn=13824, tokens=128),
          "smoke": dict(dim=256, heads=4, ffn=688, tokens=64)}


def block_weights(dim: int, ffn: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """(out, in) fp32 weights of q, k, v, out, ffn_up, ffn_down, drawn like a trained model's."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"q": (dim, dim), "k": (dim, dim), "v": (dim, dim), "out": (dim, dim), "ffn_up": (ffn, dim),
              "ffn_down": (dim, ffn)}
    weights = {}
    for name, (o, i) in shapes.items():
        channel = torch.exp(0.5 * torch.randn(i, generator=g))  # log-normal outlier channels
        weights[name] = torch.randn(o, i, generator=g) * 0.02 * channel
    return weights


def block_forward(x: torch.Tensor, w: dict[str, torch.Tensor], heads: int) -> torch.Tensor:
    """Pre-norm self-attention + GELU feed-forward with residuals (x: tokens x dim)."""
    t, d = x.shape
    h = F.layer_norm(x, (d,))
    q, k, v = (F.linear(h, w[n]).view(t, heads, d // heads).transpose(0, 1) for n in ("q", "k", "v"))
    a = F.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(t, d)
    x = x + F.linear(a, w["out"])
    h = F.layer_norm(x, (d,))
    return x + F.linear(F.gelu(F.linear(h, w["ffn_up"]), approximate="tanh"), w["ffn_down"])


def fp8_errors(dim: int, heads: int, ffn: int, tokens: int, seed: int = 0,
               dtype: torch.dtype = torch.bfloat16) -> dict[str, float]:
    """Relative output error of the block (and mean relative weight error) for plain and scaled e4m3.
    The weights are stored in `dtype` (bf16: the reference) or fp8 de-quantised into it; the block
    then runs in fp32 for all three, so the figures are the storage's error alone."""
    w32 = block_weights(dim, ffn, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(tokens, dim, generator=g) * torch.exp(0.5 * torch.randn(dim, generator=g))
    x = x.to(dtype).float()
    ref_w, plain_w, scaled_w = {}, {}, {}
    for n in list(w32):
        v = w32.pop(n).to(dtype)
        ref_w[n] = v.float()
        plain_w[n] = v.to(FP8).to(dtype).float()  # what layerwise casting computes with
        q, s = quantize_blockwise(v, scale_dtype=dtype)
        scaled_w[n] = dequantize_blockwise(q, s, dtype).float()
    with torch.no_grad():
        y = block_forward(x, ref_w, heads)
        out = {"plain_output": relative_error(block_forward(x, plain_w, heads), y),
               "scaled_output": relative_error(block_forward(x, scaled_w, heads), y)}
    out["plain_weight"] = sum(relative_error(plain_w[n], ref_w[n]) for n in ref_w) / len(ref_w)
    out["scaled_weight"] = sum(relative_error(scaled_w[n], ref_w[n]) for n in ref_w) / len(ref_w)
    return out


def case_fp8_error(ws: Workspace) -> CaseResult:
    size = WIDTHS["smoke" if ws.preset.name == "smoke" else "small"]
    t0 = time.perf_counter()
    e = fp8_errors(**size)
    seconds = time.perf_counter() - t0
    params = 4 * size["dim"] ** 2 + 2 * size["dim"] * size["ffn"]
    plain_bytes, scaled_bytes = params, params + params // 64 * 2  # + a bf16 scale per 64 weights
    ratio = e["scaled_output"] / e["plain_output"] if e["plain_output"] > 0 else math.nan
    return CaseResult(
        "fp8_error", f"fp8 weight storage: block output error vs bf16 (hidden {size['dim']}, {size['heads']} heads, "
        f"ffn {size['ffn']}, {size['tokens']} tokens)",
        "plain e4m3 (layerwise casting)", "scaled e4m3 (scale per 64 inputs)", Spread.of([ratio]), Target("report"),
        peak_bytes_a=plain_bytes, peak_bytes_b=scaled_bytes, unit="error B / error A",
        notes=[f"relative output error ||y - y_bf16|| / ||y_bf16||: plain {e['plain_output']:.4f}, "
               f"scaled {e['scaled_output']:.4f}",
               f"mean relative weight error: plain {e['plain_weight']:.4f}, scaled {e['scaled_weight']:.4f}",
               f"weights: {plain_bytes / 1e6:,.0f} MB plain fp8, {scaled_bytes / 1e6:,.0f} MB scaled (scales in bf16); "
               f"{seconds:.1f} s"],
        details={**e, **size, "seconds": seconds},
    )  # fmt: skip
