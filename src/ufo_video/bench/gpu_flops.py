"""FLOP counts from matmul shapes, the device's measured peak, and MFU.

Why count from shapes rather than `6 x params x tokens`: an MMDiT block sends video tokens
through one set of weights and text tokens through another, and timestep-modulation layers see
one row per sample, so "every parameter touches every token" overstates the work about twofold;
attention (quadratic in tokens) is missing from it. Here one forward pass runs under a
`TorchFunctionMode` that adds, for every call it sees:

    linear:     2 * rows * in_features * out_features          (rows = input.numel() / in)
    attention:  2 * B * heads * Lq * Lk * (D_qk + D_v)          (scaled_dot_product_attention)
    matmul/bmm: 2 * (batch product) * m * k * n

A LoRA training step is then counted as 3 x forward (backward ~ 2 x forward: the frozen base's
input gradients plus the LoRA's weight gradients; gradient checkpointing's recomputed forward
is NOT counted, so this is model FLOPs utilisation, MFU, not hardware FLOPs). The nominal
`6 * N * T` of the issue is reported beside it. Convolutions (the patch embedding) are not
counted (well under 0.1 % of a step).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

TRAIN_FACTOR = 3.0
FORMULA = ("FLOP/step = 3 x F_fwd (forward + backward ~ 2 x forward; checkpoint recompute not counted); "
           "F_fwd = sum over linear calls of 2*rows*in*out + sum over attention calls of 2*B*heads*Lq*Lk*(Dqk+Dv) "
           "+ 2*m*k*n per matmul, counted from the shapes of one forward; "
           "MFU = FLOP/step / (s/step x peak), peak = measured dense bf16 matmul FLOP/s on this device")
NOMINAL_FORMULA = "nominal FLOP/step = 6 x N(transformer parameters) x T(video + text tokens)"


def _matmul_flops(a: torch.Tensor, b: torch.Tensor) -> int:
    if a.ndim == 1 or b.ndim == 1:
        return 2 * max(a.numel(), b.numel())
    m, k = a.shape[-2], a.shape[-1]
    n = b.shape[-1]
    batch = math.prod(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    return 2 * batch * m * k * n


class FlopCounter(TorchFunctionMode):
    """Counts the FLOPs of linear layers, attention and matmuls run inside the `with` block."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.by_kind = {"linear": 0, "attention": 0, "matmul": 0}

    def _add(self, kind: str, flops: int) -> None:
        self.by_kind[kind] += flops
        self.total += flops

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, w = args[0], (args[1] if len(args) > 1 else kwargs["weight"])
            out_f, in_f = w.shape
            self._add("linear", 2 * (x.numel() // in_f) * in_f * out_f)
        elif func is F.scaled_dot_product_attention:
            q, k, v = args[:3] if len(args) >= 3 else (kwargs["query"], kwargs["key"], kwargs["value"])
            heads_batch = math.prod(q.shape[:-2])
            self._add("attention", 2 * heads_batch * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1]))
        elif func in (torch.matmul, torch.bmm, torch.Tensor.matmul, torch.Tensor.__matmul__):
            self._add("matmul", _matmul_flops(args[0], args[1]))
        return func(*args, **kwargs)


def count_forward(fn) -> FlopCounter:
    """FLOPs of one call of `fn` (run under no_grad: no checkpointing, no autograd graph)."""
    counter = FlopCounter()
    with torch.no_grad(), counter:
        fn()
    return counter


def mfu(flops_per_step: float, seconds_per_step: float, peak_flops: float) -> float:
    return flops_per_step / (seconds_per_step * peak_flops)


def measure_peak(device: torch.device, n: int, dtype: torch.dtype = torch.bfloat16, reps: int = 10) -> float:
    """Dense n x n x n matmul FLOP/s in `dtype` (mean of `reps` after 3 warm-ups): the
    denominator of MFU, measured rather than taken from a datasheet (the lent H200 gives
    ~790 TFLOP/s bf16 on random data)."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)
