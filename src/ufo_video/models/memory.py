"""The guide's `GPU_memory_mode` names mapped onto diffusers/accelerate calls.

| guide name                     | what happens                                                    |
|--------------------------------|-----------------------------------------------------------------|
| model_full_load                | every component on the accelerator (`pipe.to(device)`)          |
| model_cpu_offload              | whole components moved to the GPU only while used               |
| model_cpu_offload_and_qfloat8  | transformer weights stored in fp8, computed in bf16, + offload  |
| model_cpu_offload_and_fp8_scaled | block Linears in e4m3 with a scale per 64 inputs (fp8_scaled.py) + offload |
| sequential_cpu_offload         | layer-by-layer offload (least VRAM, slowest)                    |
| group_offload                  | diffusers' block-level group offload (streams where available)  |

Offloading moves weights between host and accelerator, so without CUDA it has nothing to do:
on a CPU-only machine every mode runs on the CPU and `apply_memory_mode` says so in its return
value (the CLI prints it). fp8 storage works on the CPU too and is applied there as well.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ufo_video.config import FP8_MODES, MEMORY_MODES
from ufo_video.errors import ConfigError
from ufo_video.models.fp8_scaled import enable_fp8_scaled_storage


@dataclass(frozen=True)
class MemoryPlan:
    mode: str
    device: str
    notice: str | None


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"model.device={name!r} but no CUDA device is available; use device=auto or cpu")
    return dev


#: runs on a transformer just before its weights are stored in fp8; True when it changed
#: something the user should hear about
BeforeFp8 = Callable[[torch.nn.Module], bool]


def enable_fp8_storage(transformer: torch.nn.Module, compute_dtype: torch.dtype, before_fp8: BeforeFp8 | None = None) -> bool:
    """Store the transformer's Linear weights in float8_e4m3fn and upcast per layer for compute
    (once: a second pipeline over the same transformer finds it already stored in fp8).

    `before_fp8` runs first. Whoever may have fused LoRAs into the weights passes the hook that
    unfuses them (`lora.apply.unfuse_before_low_precision_storage`: generation does), so they run
    unfused on top of the fp8 base: fp8's 3 mantissa bits would round a small weight's delta
    (UFO's 0.05-0.2) away. A hook, because models/ sits below lora/ and does not import it.
    Returns the hook's answer (the caller says so)."""
    if getattr(transformer, "_ufo_fp8_storage", False):
        return False
    changed = before_fp8(transformer) if before_fp8 is not None else False
    transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype)
    transformer._ufo_fp8_storage = True
    return changed


def denoisers(pipe: Any) -> list[torch.nn.Module]:
    """The pipeline's denoising transformers (`transformer`, and `transformer_2` of two-expert
    pipelines), the components fp8 storage applies to."""
    return [m for name, m in pipe.components.items() if name.startswith("transformer") and isinstance(m, torch.nn.Module)]


def apply_memory_mode(pipe: Any, mode: str, device: torch.device, compute_dtype: torch.dtype,
                      before_fp8: BeforeFp8 | None = None) -> MemoryPlan:
    """Place a diffusers pipeline according to `mode`; returns what was done (and why, on CPU).
    `before_fp8`: see `enable_fp8_storage` (True from it means fused LoRAs now run unfused)."""
    if mode not in MEMORY_MODES:
        raise ConfigError(f"GPU_memory_mode={mode!r} is unknown; choose one of: {', '.join(MEMORY_MODES)}")
    fused_notice = None
    if mode in FP8_MODES:
        store = (enable_fp8_storage if FP8_MODES[mode] == "plain"
                 else lambda t, d, hook: enable_fp8_scaled_storage(t, d, hook)[0])
        unfused = [store(transformer, compute_dtype, before_fp8) for transformer in denoisers(pipe)]
        if any(unfused):
            fused_notice = (f"GPU_memory_mode={mode}: the fused LoRAs run unfused on top of the fp8 weights instead "
                            "(fusing into fp8 would round a small LoRA weight away); --fuse has no effect in this mode")
    if device.type != "cuda":
        pipe.to(device)
        notice = fused_notice
        if mode != "model_full_load" and mode not in FP8_MODES:
            notice = f"GPU_memory_mode={mode}: no CUDA device, so nothing to offload; running on {device}"
        elif mode in FP8_MODES:
            notice = f"GPU_memory_mode={mode}: no CUDA device; fp8 weight storage applied, running on {device}"
            notice += f"\n{fused_notice}" if fused_notice else ""
        return MemoryPlan(mode, str(device), notice)
    if mode == "model_full_load":
        pipe.to(device)
    elif mode == "model_cpu_offload" or mode in FP8_MODES:
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "sequential_cpu_offload":
        pipe.enable_sequential_cpu_offload(device=device)
    elif mode == "group_offload":
        pipe.enable_group_offload(
            onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1
        )
    return MemoryPlan(mode, str(device), fused_notice)
