"""The memory cases of the GPU suite: what fits a 16-24 GB card, and what it costs (issue 22).

One case = one LoRA training configuration at one fixed size (no fallback to a smaller size: the
question is whether THIS setting fits): the base stored in bf16, fp8 (layerwise casting) or scaled
fp8 (`models.fp8_scaled`), N of the transformer's blocks swapped (`offload.block_swap`, the
trainer's offloader, on the blocks the family's `swap_blocks` hook names) and optionally the
checkpointed block inputs kept in host memory (`offload.activations`). The step is the training
case's (`gpu_train`): random latents and text, flow loss, backward with gradient checkpointing,
AdamW on fp32 LoRA weights. Reported: peak allocated memory over the timed steps, s/step, the
ratio to the fastest configuration of the same entry and size that ran in the same suite
(`ratio_to_fastest`, filled in by the suite), and the memory planner's estimate for the same
setting (`memory_plan.estimate_train_peak`) with its error, so the GPU check says how good the
estimate is.

The generation case (`infer-swap`) times the denoising transformer calls (classifier-free guidance
as a batch of 2, no gradient) with N blocks swapped, and reports their peak: the transformer part
of `generate --blocks-to-swap N` (the text encoder and VAE run before and after it, offloaded).

A configuration is written `<storage>/swap<N>[+offload]`, e.g. `fp8_scaled/swap32+offload`. At
the tiny preset N is clamped to the tiny model's block count (noted in the case), so the same
labels run on the CPU; at the real preset an N above the block count is an error in the table.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from ufo_video.bench.gpu_models import BuiltModel, add_lora, build, free, predict, step_inputs
from ufo_video.bench.gpu_plan import Entry, GpuPreset, MemoryConfig, Size
from ufo_video.errors import UfoError

GB = 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gb(device: torch.device) -> float | str:
    return torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else "n/a on cpu"


def _blocks_to_swap(model: BuiltModel, asked: int, clamp: bool, notes: list[str]) -> tuple[torch.nn.ModuleList, int]:
    blocks = model.adapter.swap_blocks(model.transformer)
    if asked > len(blocks):
        if not clamp:
            raise UfoError(f"{model.entry.name}: swap{asked} but the transformer has {len(blocks)} blocks")
        notes.append(f"swap{asked} clamped to the tiny model's {len(blocks)} blocks")
        asked = len(blocks)
    return blocks, asked


def _store(model: BuiltModel, storage: str, dtype: torch.dtype) -> None:
    """The base's storage, before the LoRA (as the trainer's setup orders it)."""
    if storage == "fp8":
        from ufo_video.bench.gpu_models import enable_fp8_base

        enable_fp8_base(model.transformer, dtype)
    elif storage == "fp8_scaled":
        from ufo_video.models.fp8_scaled import enable_fp8_scaled_storage

        enable_fp8_scaled_storage(model.transformer, dtype)


def run_memory_case(entry: Entry, adapter_cls: type, folder, size: Size, cfg: MemoryConfig, preset: GpuPreset,
                    device: torch.device, dtype: torch.dtype, deadline: float, clock: Callable[[], float]) -> dict:
    """Build, store, add the LoRA, swap, then time training steps at `size`; frees the model after."""
    from ufo_video.bench.gpu_train import ADAMW, make_step, timed_steps
    from ufo_video.offload import block_swap
    from ufo_video.offload.activations import host_input_checkpointing

    notes: list[str] = []
    model = build(entry, adapter_cls, folder, device, dtype)
    try:
        blocks, swapped = _blocks_to_swap(model, cfg.blocks_to_swap, preset.name == "tiny", notes)
        from ufo_video.train.memory_estimate import count_model

        counts = count_model(model.transformer, blocks)  # before fp8 and the LoRA change the modules
        _store(model, cfg.storage, dtype)
        params = add_lora(model, "bench", entry.lora_rank, entry.lora_alpha)
        swaps = block_swap.install([blocks], swapped, device=device, host="cpu") if swapped else []
        transformer = model.transformer
        transformer.enable_gradient_checkpointing(host_input_checkpointing() if cfg.activation_offload else None)
        transformer.train()
        optimizer = torch.optim.AdamW(params, **ADAMW)
        if device.type == "cuda":
            free(device)
            torch.cuda.reset_peak_memory_stats(device)
        step, inputs = make_step(model, params, optimizer, size, device, dtype)
        times, losses = timed_steps(step, preset, device, deadline, clock)
        estimate = _estimate_from(counts, cfg, swapped, inputs.video_tokens, sum(p.numel() for p in params))
        peak = _peak_gb(device)
        return {
            "size": "x".join(map(str, size)), "config": cfg.label, "storage": cfg.storage,
            "blocks_to_swap": swapped, "blocks": len(blocks), "activation_offload": cfg.activation_offload,
            "host_gb": sum(s.host_bytes for s in swaps) / GB,
            "s_per_step": statistics.median(times), "step_seconds": times, "timed_steps": len(times),
            "peak_gb": peak, "estimate_gb": estimate,
            "estimate_error": (peak / estimate - 1) if isinstance(peak, float) else "n/a on cpu",
            "video_tokens": inputs.video_tokens, "lora_params": sum(p.numel() for p in params),
            "loss_finite": all(v == v and abs(v) != float("inf") for v in losses), "notes": notes,
        }  # fmt: skip
    finally:
        del model
        free(device)


def _estimate_from(counts, cfg: MemoryConfig, swapped: int, video_tokens: int, lora_params: int) -> float:
    from ufo_video.memory_plan import PlanInputs, estimate_train_peak

    inputs = PlanInputs(
        params_total=counts.params_total, params_blocks=counts.params_blocks, n_blocks=counts.n_blocks,
        hidden_dim=counts.hidden_dim, tokens=video_tokens, batch_size=1, lora_params=lora_params,
        storage=cfg.storage, ffn_dim=counts.ffn_dim, largest_linear_params=counts.largest_linear_params,
        compute_bytes=2, gradient_checkpointing=True, activation_offload=cfg.activation_offload,
    )  # fmt: skip
    return estimate_train_peak(inputs, swapped).total / GB


def run_infer_swap_case(entry: Entry, adapter_cls: type, folder, size: Size, swap: int, preset: GpuPreset,
                        device: torch.device, dtype: torch.dtype, deadline: float, clock: Callable[[], float]) -> dict:
    """Denoising transformer calls (CFG batch 2, no gradient, a LoRA attached unfused) with `swap`
    blocks swapped: s/step and peak; the model is freed after."""
    from ufo_video.bench.gpu_models import randomise_lora_b
    from ufo_video.offload import block_swap

    notes: list[str] = []
    model = build(entry, adapter_cls, folder, device, dtype)
    try:
        blocks, swapped = _blocks_to_swap(model, swap, preset.name == "tiny", notes)
        add_lora(model, "ufo", entry.lora_rank, entry.lora_alpha)
        randomise_lora_b(model.transformer, "ufo")
        model.transformer.requires_grad_(False).eval()
        swaps = block_swap.install([blocks], swapped, device=device, host="cpu") if swapped else []
        inputs = step_inputs(model, size, batch=2, device=device, dtype=dtype)
        t = torch.full((2,), 500.0, device=device, dtype=dtype)
        if device.type == "cuda":
            free(device)
            torch.cuda.reset_peak_memory_stats(device)
        times: list[float] = []
        with torch.no_grad():
            predict(model, inputs.latents, t, inputs)  # warm-up (also fills the ring's prefetch order)
            while len(times) < preset.infer_steps and (not times or clock() < deadline):
                _sync(device)
                t0 = time.perf_counter()
                predict(model, inputs.latents, t, inputs)
                _sync(device)
                times.append(time.perf_counter() - t0)
        return {"size": "x".join(map(str, size)), "blocks_to_swap": swapped, "blocks": len(blocks),
                "host_gb": sum(s.host_bytes for s in swaps) / GB, "s_per_step": statistics.median(times),
                "timed_steps": len(times), "peak_gb": _peak_gb(device), "video_tokens": inputs.video_tokens,
                "notes": notes}  # fmt: skip
    finally:
        del model
        free(device)


def fill_ratios(cases: list) -> None:
    """Side-by-side costs of every measured memory case, against the cases of the same entry and
    size that ran in this suite: `ratio_to_fastest` (s/step over the fastest configuration) and
    `swap_overhead` (s/step over the same storage and activation setting without swap)."""
    groups: dict[tuple[str, str], list] = {}
    for c in cases:
        if c.kind == "memory" and c.status == "ok":
            groups.setdefault((c.entry, c.metrics["size"]), []).append(c)
    for group in groups.values():
        fastest = min(c.metrics["s_per_step"] for c in group)
        unswapped = {(c.metrics["storage"], c.metrics["activation_offload"]): c.metrics["s_per_step"]
                     for c in group if c.metrics["blocks_to_swap"] == 0}
        for c in group:
            m = c.metrics
            m["ratio_to_fastest"] = m["s_per_step"] / fastest
            plain = unswapped.get((m["storage"], m["activation_offload"]))
            if m["blocks_to_swap"] and plain:
                m["swap_overhead"] = m["s_per_step"] / plain
