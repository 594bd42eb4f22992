"""Block swap and activation offload in a training run (`train.blocks_to_swap`,
`train.activation_offload`; the offloaders themselves are in `ufo_video.offload`).

`setup` calls these in order: `check_offload_settings` first, `checkpointing_func` when it turns
gradient checkpointing on, and `install_block_swap` after the LoRA exists and fp8 storage is
applied, before anything moves the transformer to the device (the swapped weights then never
reach it). Nothing here holds state a checkpoint must save: resume restores the LoRA and the
optimizer, and the offloader is rebuilt the same way.
"""

from __future__ import annotations

import torch

from ufo_video.config import UfoConfig
from ufo_video.errors import ConfigError


def check_offload_settings(cfg: UfoConfig, *, fsdp: bool, deepspeed: bool) -> None:
    """Refuse combinations the offloaders cannot honour, naming the settings."""
    t = cfg.train
    asked = [name for name, on in (("blocks_to_swap", t.blocks_to_swap != 0), ("activation_offload", t.activation_offload)) if on]
    if asked and not t.gradient_checkpointing:
        why = ("a swapped block's weights are on the device only while it runs, so backward must recompute it"
               if asked[0] == "blocks_to_swap" else "it offloads the block inputs that checkpointing keeps")
        raise ConfigError(f"train.{asked[0]} needs train.gradient_checkpointing=true: {why}")
    if t.blocks_to_swap != 0 and (fsdp or deepspeed):
        raise ConfigError(f"train.blocks_to_swap with {'FSDP' if fsdp else 'DeepSpeed'}: both decide where the weights "
                          "live; use one of them (block swap works with one GPU or DDP)")


def checkpointing_func(cfg: UfoConfig, is_main: bool):
    """What `enable_gradient_checkpointing` gets: None (diffusers' default) or the one that keeps
    the checkpointed inputs in host memory."""
    if not cfg.train.activation_offload:
        return None
    from ufo_video.offload.activations import host_input_checkpointing

    if is_main:
        print("activation offload: each checkpointed block's inputs wait in "
              f"{'pinned ' if torch.cuda.is_available() else ''}host memory until backward recomputes it")
    return host_input_checkpointing()


def _cuda_run(cfg: UfoConfig) -> bool:
    return torch.cuda.is_available() and cfg.model.device != "cpu"


def resolve_blocks_to_swap(cfg: UfoConfig, n_blocks: int, planned: int | None = None) -> int:
    """How many of the transformer's `n_blocks` blocks this run swaps. `planned`: what the memory
    planner (`train.memory_estimate.before_load`, before the model loads) made of `auto`; an `auto`
    without it means no planner ran (setup called on its own)."""
    value = cfg.train.blocks_to_swap
    if value == "auto" and planned is not None:
        return min(int(planned), n_blocks)
    if value == "auto":
        if not _cuda_run(cfg):
            print("blocks_to_swap=auto: no CUDA device, no blocks swapped")
            return 0
        raise ConfigError("train.blocks_to_swap=auto is resolved by the memory planner, which did not resolve it "
                          f"here; give a number of blocks (0..{n_blocks}) instead")
    if value > n_blocks:
        raise ConfigError(f"train.blocks_to_swap={value} but this transformer has {n_blocks} blocks; "
                          f"set it to at most {n_blocks}")
    return int(value)


def install_block_swap(cfg: UfoConfig, model, transformer: torch.nn.Module, device: torch.device, is_main: bool,
                       planned: int | None = None) -> list:
    """Swap the last `train.blocks_to_swap` blocks of the trained transformer (frozen base weights
    only; the LoRA stays on the device), with DDP told to leave those weights alone. Returns the
    offloaders (empty when none)."""
    if cfg.train.blocks_to_swap == 0:
        return []
    blocks = model.swap_blocks(transformer)  # a family without the hook says so
    count = resolve_blocks_to_swap(cfg, len(blocks), planned)
    if count == 0:
        return []
    from ufo_video.offload import block_swap

    swaps = block_swap.install([blocks], count, device=device, host="cpu")
    block_swap.ignore_in_ddp(transformer, swaps)
    if is_main:
        print(block_swap.describe(swaps, len(blocks)))
    return swaps
