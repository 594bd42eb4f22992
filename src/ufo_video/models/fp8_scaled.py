"""Scaled fp8 weight storage: float8_e4m3fn with one scale per block of 64 input elements.

Plain e4m3 casting (`enable_layerwise_casting`, `train.fp8_base` alone) keeps weights as they are,
so a layer whose weights are all small uses few of e4m3's exponents and a row with one large
weight rounds its small ones away. Here every row of a Linear weight is cut into blocks of
`BLOCK` (64) input elements; each block is divided by its own scale = absmax / 448 (e4m3's
largest finite value) before the cast, so every block spans e4m3's whole range. At forward the
weight is de-quantised (q x scale) into the compute dtype, used once and dropped: storage is
1 byte per weight plus one scale per 64 weights.

Only the Linear layers inside the transformer's repeated blocks (`repeated_blocks`: where
nearly all parameters are) are converted; embeddings, norms and the
input/output projections stay as they are. The converted layer is an `nn.Linear` subclass, so
PEFT wraps it like any Linear (training adds the LoRA after conversion) and, when a LoRA was
attached first (generation), the PEFT layer's `base_layer` is the one replaced: the LoRA runs
unchanged on top of the de-quantised base, and its gradients flow as over any frozen Linear.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite float8_e4m3fn
BLOCK = 64


def block_size(in_features: int, block: int = BLOCK) -> int:
    """The block length used for a row of `in_features`: `block` when it divides the row, else the
    whole row (one scale per output row: small layers of tiny test models)."""
    return block if in_features % block == 0 else in_features


def quantize_blockwise(weight: torch.Tensor, block: int = BLOCK,
                       scale_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, scale) of a 2-D weight (out, in): q float8_e4m3fn (out, in), scale (out, in/block) with
    scale = absmax(block)/448 (an all-zero block gets scale 1). The scale is rounded to
    `scale_dtype` before dividing, so q x scale in that dtype is the best e4m3 reconstruction."""
    if weight.ndim != 2:
        raise ValueError(f"quantize_blockwise expects a 2-D weight, got shape {tuple(weight.shape)}")
    out_f, in_f = weight.shape
    b = block_size(in_f, block)
    w = weight.detach().float().reshape(out_f, in_f // b, b)
    scale = w.abs().amax(dim=-1) / FP8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).to(scale_dtype)
    q = (w / scale.float().unsqueeze(-1)).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q.reshape(out_f, in_f), scale


def dequantize_blockwise(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """q x scale per block, in `dtype` (the compute dtype)."""
    out_f, in_f = q.shape
    blocks = scale.shape[-1]
    w = q.to(dtype).reshape(out_f, blocks, in_f // blocks) * scale.to(dtype).unsqueeze(-1)
    return w.reshape(out_f, in_f)


class ScaledFp8Linear(nn.Linear):
    """An `nn.Linear` whose weight is stored as float8_e4m3fn + per-block scales (`weight_scale`)
    and de-quantised into `compute_dtype` at every forward. The weight is frozen."""

    compute_dtype: torch.dtype

    @classmethod
    def from_linear(cls, linear: nn.Linear, compute_dtype: torch.dtype, block: int = BLOCK) -> ScaledFp8Linear:
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        q, scale = quantize_blockwise(linear.weight.data, block, scale_dtype=compute_dtype)
        new.weight = nn.Parameter(q.to(linear.weight.device), requires_grad=False)
        new.bias = linear.bias
        new.register_buffer("weight_scale", scale.to(linear.weight.device))
        new.compute_dtype = compute_dtype
        new.train(linear.training)
        return new

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize_blockwise(self.weight, self.weight_scale, self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dequantized_weight()
        bias = self.bias.to(w.dtype) if self.bias is not None else None
        y = F.linear(x.to(w.dtype), w, bias)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", fp8_scaled block={self.in_features // self.weight_scale.shape[-1]}"


def repeated_blocks(module: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """`module`'s lists of repeated blocks: ModuleLists of at least 2 modules of one class that
    have children (not e.g. an attention's `to_out = [Linear, Dropout]`)."""
    return [(name, m) for name, m in module.named_modules()
            if isinstance(m, nn.ModuleList) and len(m) > 1 and len({type(b) for b in m}) == 1
            and any(True for _ in m[0].children())]


def block_linears(module: nn.Module) -> Iterator[tuple[str, nn.Module, str, nn.Linear]]:
    """(qualified name, parent, attribute, Linear) for every plain Linear inside the repeated
    blocks of `module`, LoRA layers (PEFT's lora_A/lora_B/...) excluded."""
    seen: set[int] = set()
    for list_name, mlist in repeated_blocks(module):
        for parent_name, parent in mlist.named_modules(prefix=list_name):
            for attr, child in parent.named_children():
                name = f"{parent_name}.{attr}"
                if (type(child) is nn.Linear and id(child) not in seen
                        and not any(part.startswith("lora_") for part in name.split("."))):
                    seen.add(id(child))
                    yield name, parent, attr, child


#: runs on a module before its weights are quantised; True when it changed something to report
BeforeFp8 = Callable[[nn.Module], bool]


def enable_fp8_scaled_storage(transformer: nn.Module, compute_dtype: torch.dtype,
                              before_fp8: BeforeFp8 | None = None, block: int = BLOCK) -> tuple[bool, int]:
    """Convert the Linear layers of `transformer`'s blocks to `ScaledFp8Linear` (once: a second
    call finds it done). `before_fp8` runs first (e.g. unfusing fused LoRAs, as for plain fp8).
    Returns (the hook's answer, number of layers converted)."""
    if getattr(transformer, "_ufo_fp8_scaled", False):
        return False, 0
    changed = before_fp8(transformer) if before_fp8 is not None else False
    n = 0
    for _, parent, attr, linear in list(block_linears(transformer)):
        setattr(parent, attr, ScaledFp8Linear.from_linear(linear, compute_dtype, block))
        n += 1
    transformer._ufo_fp8_scaled = True
    return changed, n


def relative_error(y: torch.Tensor, reference: torch.Tensor) -> float:
    """||y - ref|| / ||ref|| in fp32."""
    ref = reference.detach().float()
    return float((y.detach().float() - ref).norm() / ref.norm().clamp_min(1e-30))
