"""Peak device memory of a LoRA training step, estimated from numbers before anything loads.

It gets counts, not model families: the transformer's parameters (all, and those of its `n_blocks`
repeated blocks), its hidden width, the tokens per sample, the LoRA's parameters and how the base
is stored. The parts, each stated so a user can check them:

- base weights: the blocks at `block_bytes` per parameter (bf16 2, fp8 1, scaled fp8 1 + one bf16
  scale per 64 weights), the rest at `other_bytes`. With `blocks_to_swap = N` only n_blocks - N
  blocks stay on the device, plus a ring of 2 block-sized buffers the swapped ones stream through.
- LoRA training state: the trainer keeps LoRA weights in fp32 (no separate master copy), so per
  LoRA parameter 4 (weight) + 4 (gradient) + 8 (AdamW's two fp32 moments; 2 with 8-bit Adam).
- checkpointed activations: with gradient checkpointing every block keeps its input
  (batch x tokens x hidden in the compute dtype) until backward; activation offload keeps them in
  host memory instead (two in flight on the device, counted in the workspace). Without
  checkpointing every block keeps all of its activations (the workspace figure, per block).
- workspace: one block's activations while it is recomputed and differentiated, taken as
  `WORKSPACE_PER_TOKEN` hidden-widths + 2 ffn-widths per token (q/k/v/out, norms, the two ffn
  tensors) times 1.5 for the gradients alive at once; plus, with fp8 storage, the largest Linear
  de-quantised into the compute dtype.
- other components resident on the device (VAE, text encoders) and a fixed overhead for the CUDA
  context, cuBLAS workspace and allocator slack (`OVERHEAD_BYTES`).

These are estimates (nothing here was measured on a GPU); `pick_blocks_to_swap` adds
`SAFETY` (10 %) on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ufo_video.errors import UfoError

GB = 1e9
GIB = 1024**3
OVERHEAD_BYTES = int(1.0 * GIB)  # CUDA context + cuBLAS workspace + allocator slack
WORKSPACE_PER_TOKEN = 12  # hidden-widths of one block's activations per token (besides 2 ffn widths)
SAFETY = 0.10

#: bytes per parameter of (blocks, the rest) for each way of storing the frozen base
STORAGE = {"bf16": (2.0, 2.0), "fp16": (2.0, 2.0), "fp32": (4.0, 4.0), "fp8": (1.0, 1.0),
           "fp8_scaled": (1.0 + 2.0 / 64, 2.0)}


class MemoryPlanError(UfoError):
    """The run cannot fit the device, said before anything loads."""


@dataclass(frozen=True)
class PlanInputs:
    params_total: int  # transformer parameters
    params_blocks: int  # of which in the n_blocks repeated blocks
    n_blocks: int
    hidden_dim: int
    tokens: int  # per sample
    batch_size: int = 1
    lora_params: int = 0
    storage: str = "bf16"  # a key of STORAGE
    ffn_dim: int = 0
    largest_linear_params: int = 0
    compute_bytes: int = 2  # bf16 / fp16 activations
    gradient_checkpointing: bool = True
    activation_offload: bool = False
    optimizer_state_bytes: int = 8  # AdamW fp32 moments; 2 with 8-bit Adam
    other_components_bytes: int = 0  # VAE / text encoders kept on the device

    @property
    def block_params(self) -> int:
        return self.params_blocks // max(self.n_blocks, 1)


@dataclass
class Estimate:
    total: int
    parts: dict[str, int] = field(default_factory=dict)
    blocks_to_swap: int = 0

    def describe(self, unit: str = "GiB") -> str:
        div = GIB if unit == "GiB" else GB
        shown = ", ".join(f"{k} {v / div:.1f}" for k, v in self.parts.items() if v)
        return f"~{self.total / div:.1f} {unit} ({shown})"


def tokens_per_sample(latent_frames: int, height: int, width: int, size_multiple: int) -> int:
    """Transformer tokens of one clip: latent frames x (H / multiple) x (W / multiple), where the
    multiple is the VAE's spatial factor x the patch (a temporal patch of 1)."""
    return latent_frames * (height // size_multiple) * (width // size_multiple)


def max_swap(n_blocks: int) -> int:
    """Every block can be swapped: the offloader (`offload.block_swap`) keeps a ring of 2 device
    buffers however many blocks it moves (musubi-tuner's offloader stops at n - 1)."""
    return max(n_blocks, 0)


def estimate_train_peak(p: PlanInputs, blocks_to_swap: int = 0) -> Estimate:
    """The estimated peak device memory of one training step with `blocks_to_swap` blocks swapped."""
    if not 0 <= blocks_to_swap <= max_swap(p.n_blocks):
        raise ValueError(f"blocks_to_swap={blocks_to_swap} is outside 0..{max_swap(p.n_blocks)}")
    block_b, other_b = STORAGE[p.storage]
    on_device = p.n_blocks - blocks_to_swap + (2 if blocks_to_swap else 0)  # + the ring of 2 buffers
    base = (p.params_total - p.params_blocks) * other_b + on_device * p.block_params * block_b
    lora = p.lora_params * (4 + 4 + p.optimizer_state_bytes)
    per_token_block = (WORKSPACE_PER_TOKEN * p.hidden_dim + 2 * p.ffn_dim) * p.compute_bytes
    one_input = p.batch_size * p.tokens * p.hidden_dim * p.compute_bytes
    one_block = p.batch_size * p.tokens * per_token_block
    if p.gradient_checkpointing:
        activations = 0 if p.activation_offload else p.n_blocks * one_input
        workspace = int(1.5 * one_block) + (2 * one_input if p.activation_offload else 0)
    else:
        activations = p.n_blocks * one_block
        workspace = int(0.5 * one_block)
    if p.storage.startswith("fp8"):
        workspace += p.largest_linear_params * p.compute_bytes
    parts = {"base weights": int(base), "LoRA + AdamW": lora, "checkpointed activations": activations,
             "block workspace": workspace, "other components": p.other_components_bytes,
             "CUDA overhead": OVERHEAD_BYTES}
    return Estimate(sum(parts.values()), parts, blocks_to_swap)


def fits(estimate: Estimate, free_bytes: int) -> bool:
    return estimate.total * (1 + SAFETY) <= free_bytes


def advice(p: PlanInputs) -> list[str]:
    """What would lower the estimate, skipping what the run already does."""
    tips = ["fewer frames (data.video_sample_n_frames)", "a smaller size (data.video_sample_size)"]
    if p.batch_size > 1:
        tips.append("train.train_batch_size=1")
    if p.gradient_checkpointing and not p.activation_offload:
        tips.append("train.activation_offload=true")
    if not p.gradient_checkpointing:
        tips.append("train.gradient_checkpointing=true")
    if p.storage in ("bf16", "fp16", "fp32"):
        tips.append("train.fp8_base=true (with train.fp8_scaled=true)")
    if p.other_components_bytes:
        tips.append("train.low_vram=true or the latent cache (data.cache_latents=true)")
    return tips


def pick_blocks_to_swap(p: PlanInputs, free_bytes: int) -> tuple[int, Estimate]:
    """The smallest N whose estimate (+ SAFETY) fits `free_bytes`, with its estimate; a
    `MemoryPlanError` naming what to change when even the most swap does not fit."""
    for n in range(max_swap(p.n_blocks) + 1):
        est = estimate_train_peak(p, n)
        if fits(est, free_bytes):
            return n, est
    est = estimate_train_peak(p, max_swap(p.n_blocks))
    raise MemoryPlanError(
        f"this training run cannot fit the device: estimated {est.describe()} with {est.blocks_to_swap} of "
        f"{p.n_blocks} blocks swapped (+{SAFETY:.0%} margin), {free_bytes / GIB:.1f} GiB free. "
        f"To fit, try: {'; '.join(advice(p))}"
    )
