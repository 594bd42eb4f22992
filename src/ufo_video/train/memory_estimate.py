"""The numbers `memory_plan` needs, read from a run's config and its model built on the meta
device (nothing loaded), and the lines the training start summary prints.

Counted from the model: the transformer's parameters, its blocks (the ones block swap moves:
`ModelAdapter.swap_blocks`; a family without them has no estimate), the hidden width (the input width holding most of the blocks' Linear weights), the
ffn width (their largest output width), the largest Linear, and the LoRA's parameters
(rank x (in + out) of every targeted module, `lora.inject.resolve_targets`). Tokens per sample
come from the largest clip the config asks for (video frames x size^2, or one image) through the
model's `SizeRules` and `latent_frames`. Bucketing keeps a clip's area near size^2, so the
square is what is estimated.

`resolve_auto_blocks` turns `train.blocks_to_swap = "auto"` into a number before the model loads:
on CUDA from the card's free memory (`torch.cuda.mem_get_info`), on the CPU 0 (with a note).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ufo_video.memory_plan import (GIB, Estimate, PlanInputs, estimate_train_peak, fits, max_swap,
                                   pick_blocks_to_swap, tokens_per_sample)


@dataclass(frozen=True)
class ModelCounts:
    params_total: int
    params_blocks: int
    n_blocks: int
    hidden_dim: int
    ffn_dim: int
    largest_linear_params: int


def count_model(transformer: nn.Module, blocks: nn.ModuleList) -> ModelCounts:
    """The transformer's sizes (works on a meta-device module); `blocks`: the ones block swap moves
    (`ModelAdapter.swap_blocks`)."""
    total = sum(p.numel() for p in transformer.parameters())
    linears = [m for m in blocks.modules() if isinstance(m, nn.Linear)]
    widths: Counter[int] = Counter()
    for m in linears:  # by parameters: the main stream's width wins over a narrower side stream's
        widths[m.in_features] += m.in_features * m.out_features
    return ModelCounts(total, sum(p.numel() for p in blocks.parameters()), len(blocks),
                       widths.most_common(1)[0][0] if widths else 0,
                       max((m.out_features for m in linears), default=0),
                       max((m.in_features * m.out_features for m in linears), default=0))


def lora_parameters(transformer: nn.Module, targets: list[str], rank: int) -> int:
    """rank x (inputs + outputs) of each targeted Linear / Conv."""
    modules = dict(transformer.named_modules())
    n = 0
    for name in targets:
        m = modules[name]
        if isinstance(m, nn.Linear):
            n += rank * (m.in_features + m.out_features)
        elif isinstance(m, nn.Conv2d | nn.Conv3d | nn.Conv1d):
            n += rank * (m.in_channels * int(torch.tensor(m.kernel_size).prod()) + m.out_channels)
    return n


def storage_of(train: Any, weight_dtype: str) -> str:
    if getattr(train, "fp8_base", False):
        return "fp8_scaled" if getattr(train, "fp8_scaled", False) else "fp8"
    return weight_dtype


def largest_clip(cfg: Any, shell: Any) -> tuple[int, int, int]:
    """(frames, height, width) of the sample with the most tokens the config asks for (a video
    clip, or an image at image_sample_size), on the model's grid."""
    rules = shell.rules
    m = rules.size_multiple
    video = (rules.floor_frames(cfg.data.video_sample_n_frames), cfg.data.video_sample_size // m * m)
    image = (1, cfg.data.image_sample_size // m * m)
    return max(((f, s, s) for f, s in (video, image)),
               key=lambda c: tokens_per_sample(shell.latent_frames(c[0]), c[1], c[2], m))


def plan_inputs(cfg: Any, device_type: str = "cuda", clip: tuple[int, int, int] | None = None,
                shell: Any = None) -> tuple[PlanInputs, ModelCounts]:
    """Everything the planner needs for this run, from the config and a meta-device model.
    `clip` (frames, height, width) replaces the config's largest clip (`model plan --size`);
    `shell`: the run's inspected model folder (looked up from the config when not given)."""
    from ufo_video.lora.inject import resolve_targets
    from ufo_video.models.registry import model_shell
    from ufo_video.train.setup import needed_components

    path = cfg.model.pretrained_model_name_or_path
    shell = shell if shell is not None else model_shell(path)
    expert = shell.select_expert(cfg.train.expert).component
    modules = type(shell).build_meta(path)
    transformer = modules[expert]
    counts = count_model(transformer, shell.swap_blocks(transformer))
    targets = resolve_targets(type(shell), transformer, cfg.lora.target_modules)
    t = cfg.train
    frames, height, width = clip or largest_clip(cfg, shell)
    tokens = tokens_per_sample(shell.latent_frames(frames), height, width, shell.rules.size_multiple)
    wbytes = 4 if cfg.model.weight_dtype == "fp32" else 2
    others = 0
    if not (t.low_vram and device_type != "cpu"):
        for name in needed_components(cfg, shell):
            m = modules.get(name)
            if name != expert and not name.startswith("transformer") and isinstance(m, nn.Module):
                others += sum(p.numel() for p in m.parameters()) * wbytes
    inputs = PlanInputs(
        params_total=counts.params_total, params_blocks=counts.params_blocks, n_blocks=counts.n_blocks,
        hidden_dim=counts.hidden_dim, tokens=tokens, batch_size=t.train_batch_size,
        lora_params=lora_parameters(transformer, targets, cfg.lora.rank), storage=storage_of(t, cfg.model.weight_dtype),
        ffn_dim=counts.ffn_dim, largest_linear_params=counts.largest_linear_params,
        compute_bytes=4 if (cfg.model.weight_dtype == "fp32" and t.mixed_precision == "no") else 2,
        gradient_checkpointing=t.gradient_checkpointing,
        activation_offload=t.activation_offload,
        optimizer_state_bytes=2 if t.use_8bit_adam else 8, other_components_bytes=others,
    )  # fmt: skip
    return inputs, counts


def resolve_auto_blocks(inputs: PlanInputs, device: torch.device, free_bytes: int | None = None) -> tuple[int, str]:
    """`blocks_to_swap = "auto"` -> (N, a line saying why). CUDA: the smallest N that fits the
    card's free memory (`torch.cuda.mem_get_info`, or `free_bytes`), else `MemoryPlanError`
    before anything loads. CPU: 0 (nothing to swap to)."""
    if device.type != "cuda":
        return 0, "train.blocks_to_swap=auto -> 0: no CUDA device, nothing to swap"
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    n, est = pick_blocks_to_swap(inputs, free_bytes)
    return n, (f"train.blocks_to_swap=auto -> {n} of {inputs.n_blocks} (estimated peak {est.total / GIB:.1f} GiB, "
               f"{free_bytes / GIB:.1f} GiB free on {device})")


def summary_lines(inputs: PlanInputs, n_swap: int, device: torch.device, free_bytes: int | None = None) -> list[str]:
    """The start summary's memory lines: the estimate and its parts (labelled for a CUDA device
    on the CPU), and a warning when it exceeds the card's free memory."""
    n_swap = min(n_swap, max_swap(inputs.n_blocks))
    est: Estimate = estimate_train_peak(inputs, n_swap)
    where = "" if device.type == "cuda" else " (estimated for a CUDA device; this run is on the CPU)"
    swap = f", {n_swap} of {inputs.n_blocks} blocks swapped" if n_swap else ""
    lines = [f"  device memory estimate{where}: {est.describe()}; {inputs.tokens} tokens per sample, "
             f"base {inputs.storage}{swap}"]
    if device.type == "cuda":
        if free_bytes is None:
            free_bytes = torch.cuda.mem_get_info(device)[0]
        if not fits(est, free_bytes):
            lines.append(f"  warning: the estimate (+10 %) exceeds the {free_bytes / GIB:.1f} GiB free on {device}; "
                         "if the run stops out of memory see train.blocks_to_swap=auto, fp8 or fewer frames")
    return lines


def before_load(cfg: Any, device: torch.device, shell: Any = None) -> tuple[list[str], int | None]:
    """(summary lines, the resolved `blocks_to_swap` when it was "auto", else None). Called before
    the model loads; a run that cannot fit under "auto" stops here with `MemoryPlanError`."""
    requested = cfg.train.blocks_to_swap
    try:  # always for a CUDA device (on the CPU the line says so)
        inputs, _ = plan_inputs(cfg, "cuda", shell=shell)
    except Exception as exc:  # noqa: BLE001 - an estimate never stops a run; setup reports real problems
        if requested == "auto":
            from ufo_video.memory_plan import MemoryPlanError

            raise MemoryPlanError(f"train.blocks_to_swap=auto: the memory estimate failed ({exc}); "
                                  "set train.blocks_to_swap to a number") from exc
        return [f"  device memory estimate unavailable ({type(exc).__name__}: {exc})"], None
    lines: list[str] = []
    resolved = None
    if requested == "auto":
        resolved, note = resolve_auto_blocks(inputs, device)
        lines.append(f"  {note}")
    n = resolved if resolved is not None else int(requested or 0)
    return summary_lines(inputs, n, device) + lines, resolved


CARDS_GB = (16, 24, 48, 80)


def plan_report(cfg: Any, clip: tuple[int, int, int] | None = None, activation_offload: bool = False,
                cards_gb: tuple[float, ...] = CARDS_GB) -> tuple[list[str], dict[str, Any]]:
    """`ufo-video model plan`: the estimate without swap and, per card size, the smallest
    blocks_to_swap that fits (or why nothing does). Returns (lines, the same as data)."""
    from dataclasses import replace

    from ufo_video.memory_plan import MemoryPlanError

    inputs, _ = plan_inputs(cfg, "cuda", clip)
    inputs = replace(inputs, activation_offload=activation_offload)
    est = estimate_train_peak(inputs, 0)
    lines = [f"estimated peak device memory of a LoRA training step (not measured): {est.describe()}",
             f"  {inputs.tokens} tokens per sample x batch {inputs.batch_size}, base {inputs.storage}, "
             f"{inputs.lora_params:,} LoRA parameters, {inputs.n_blocks} blocks of "
             f"{inputs.block_params * 2 / GIB:.2f} GiB in bf16, activation offload "
             f"{'on' if activation_offload else 'off'}"]
    data: dict[str, Any] = {"estimate_gib": est.total / GIB, "parts_gib": {k: v / GIB for k, v in est.parts.items()},
                            "tokens": inputs.tokens, "cards": {}}
    for gb in cards_gb:
        free = int(gb * 1e9 * 0.97)  # a card's free memory: its marketed GB less ~3 % the driver keeps
        try:
            n, fit = pick_blocks_to_swap(inputs, free)
            lines.append(f"  {gb:g} GB card: fits with blocks_to_swap={n} (~{fit.total / GIB:.1f} GiB)")
            data["cards"][f"{gb:g}"] = {"blocks_to_swap": n, "estimate_gib": fit.total / GIB}
        except MemoryPlanError as exc:
            lines.append(f"  {gb:g} GB card: does not fit ({str(exc).split('To fit, try: ')[-1]})")
            data["cards"][f"{gb:g}"] = None
    return lines, data
