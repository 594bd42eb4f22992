"""FSDP2 (accelerate's `distributed_type: FSDP`, `fsdp_version: 2`): the frozen base weights are
sharded across the processes, for models whose weights do not fit one GPU next to activations.

What this trainer adds to accelerate's FSDP2 preparation, and why:
- The transformer is not moved to the GPU before `prepare`: `fully_shard` moves each process's
  shard there, so no GPU ever holds the whole model.
- After `prepare` the parameters are DTensors (each process holds a shard). The LoRA file and the
  resume state need whole tensors, so the trainable tensors are gathered on every process
  (`full_tensor`, a collective) and written by the main process. The optimizer state is gathered
  and restored through torch's public `torch.distributed.checkpoint.state_dict` API as a full,
  name-keyed state dict: the state folder holds the LoRA and its optimizer only (accelerate's
  `save_state` would write the whole sharded base model into every checkpoint).
- Every forward all-gathers parameters with every other process, so validation renders the same
  number of clips on every process (see `validation.my_jobs`); it runs without the step cache,
  which could skip a block's collective on one process only.

Only FSDP2 is accepted: FSDP1 flattens frozen base weights and trainable LoRA weights into one
buffer (it needs `use_orig_params` and uniform dtypes), FSDP2 keeps them as separate tensors.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ufo_video.errors import ConfigError

STATE_FILE = "fsdp-optimizer"  # state_io.save_nested prefix inside checkpoint-N/


def fsdp_launch() -> bool:
    """`accelerate launch` with an FSDP config (it sets this variable for every process)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def uses_fsdp(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def configure_fsdp(cfg, accelerator) -> None:
    """Refuse, by name, what this trainer cannot do under FSDP; say what it will do."""
    t, plugin = cfg.train, accelerator.state.fsdp_plugin
    problems = []
    if accelerator.num_processes < 2:
        problems.append("one process (FSDP shards the weights across processes; with one GPU use "
                        "train.fp8_base=true and train.low_vram=true instead, or launch with --num_processes >= 2)")
    if getattr(plugin, "fsdp_version", 1) != 2:
        problems.append("fsdp_version 1 (set fsdp_version: 2 in the accelerate config: FSDP1 flattens the frozen "
                        "base and the trainable LoRA into one buffer)")
    if t.fp8_base:
        problems.append("train.fp8_base=true (fp8 storage layers cannot be sharded as DTensors)")
    if cfg.model.weight_dtype != "fp32" and t.mixed_precision == "no":
        problems.append(f"model.weight_dtype={cfg.model.weight_dtype} with train.mixed_precision=no (FSDP2 needs "
                        "one parameter dtype per shard group without a mixed-precision policy; set "
                        f"train.mixed_precision={cfg.model.weight_dtype})")
    if problems:
        raise ConfigError("FSDP cannot run this config as asked: " + "; ".join(problems))
    if accelerator.is_main_process:
        policy = getattr(plugin, "auto_wrap_policy", None)
        print(f"FSDP2 on {accelerator.num_processes} processes: base weights sharded, "
              f"wrap policy {getattr(policy, '__name__', policy) or 'none (one shard group)'}, "
              "LoRA and optimizer state gathered for each checkpoint")


def describe_shards(transformer: torch.nn.Module) -> str:
    """How much of the transformer's weights this process holds (proof that sharding happened)."""
    local = sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in transformer.parameters())
    whole = sum(p.numel() for p in transformer.parameters())
    return f"FSDP2: this process holds {local:,} of the transformer's {whole:,} parameter elements ({local / whole:.0%})"


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a DTensor shard (a collective: every process must call it)."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def gathered_trainable(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable tensor, whole, on every process (detached)."""
    return {n: full(p.detach()) for n, p in transformer.named_parameters() if p.requires_grad}


def _options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def optimizer_state(transformer: torch.nn.Module, optimizer) -> dict:
    """The optimizer's whole state, keyed by parameter name (a collective; CPU tensors)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(transformer, optimizer, options=_options(cpu_offload=True))


def save_optimizer(transformer: torch.nn.Module, optimizer, folder: Path, is_main: bool) -> None:
    from ufo_video.train import state_io

    state = optimizer_state(transformer, optimizer)
    if is_main:
        state_io.save_nested(state, folder, STATE_FILE)


def has_state(folder: Path) -> bool:
    return any(folder.glob(f"{STATE_FILE}.*"))


def restore(transformer: torch.nn.Module, optimizer, lora: dict[str, torch.Tensor], folder: Path) -> None:
    """Put a saved LoRA and optimizer state into the sharded run: every process reads the whole
    state and keeps its own shards."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    from ufo_video.train import state_io

    # strict=False: the state holds the trainable tensors only (the frozen base is the model's own);
    # a LoRA tensor that never got a gradient (e.g. on a block output nothing reads) has no optimizer
    # state in a straight run either. The names were checked against the saved LoRA by the caller.
    set_model_state_dict(transformer, lora, options=_options(strict=False))
    optim = state_io.load_nested(folder, STATE_FILE)
    set_optimizer_state_dict(transformer, optimizer, optim, options=_options(strict=False))
