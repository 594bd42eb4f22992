"""Real-size transformers with random weights, built straight on the accelerator, and their inputs.

No weights can be downloaded on a lent GPU, and random weights cost exactly what trained ones
cost in time and memory. So each model is built from its shipped configs by its family adapter
(`build_meta`: meta device, nothing allocated), then each parameter is allocated directly on the
device in the compute dtype and initialised there: the 24 GB of a 12B model never pass through
host memory. Everything family-specific comes from the adapter (`inspect`, `build_meta`,
`predict`, `lora_target_presets`, compression factors) and the table entry (text width key).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ufo_video.bench.gpu_plan import Entry, Size
from ufo_video.errors import UfoError

INIT_STD = 0.02


def config_folder(entry: Entry, work: Path) -> Path:
    """The entry's configs folder; for the tiny preset a copy with the transformer overrides."""
    if not entry.transformer_overrides:
        return entry.configs
    out = work / f"configs-{entry.name}"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(entry.configs, out)
    cfg_path = out / "transformer" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(entry.transformer_overrides)
    cfg_path.write_text(json.dumps(cfg, indent=1))
    return out


def _init_(tensor: torch.Tensor, name: str, gen: torch.Generator) -> None:
    """Matrices N(0, 0.02^2) (a usual transformer init: activations stay finite through every
    block in bf16), biases 0, other vectors (norm scales) 1."""
    if not tensor.is_floating_point():
        tensor.zero_()
    elif tensor.ndim >= 2:
        tensor.normal_(0.0, INIT_STD, generator=gen)
    elif name.endswith("bias"):
        tensor.zero_()
    else:
        tensor.fill_(1.0)


@torch.no_grad()
def materialise(module: nn.Module, device: torch.device, dtype: torch.dtype, seed: int = 0) -> nn.Module:
    """Allocate every meta parameter on `device` in `dtype` and initialise it there (frozen).
    Modules the model class keeps in fp32 (diffusers' `_keep_in_fp32_modules`, honoured by its
    `from_pretrained` too) get fp32. Buffers are real already (`build_meta` keeps them) and are
    moved to `device`."""
    gen = torch.Generator(device=device).manual_seed(seed)
    keep_fp32 = set(getattr(module, "_keep_in_fp32_modules", None) or [])
    for mod_name, mod in module.named_modules():
        in_fp32 = bool(keep_fp32.intersection(mod_name.split(".")))
        for name, param in list(mod.named_parameters(recurse=False)):
            if not param.is_meta:
                continue
            chosen = (torch.float32 if in_fp32 else dtype) if param.is_floating_point() else param.dtype
            t = torch.empty(param.shape, dtype=chosen, device=device)
            _init_(t, name, gen)
            setattr(mod, name, nn.Parameter(t, requires_grad=False))
    module.to(device)
    left = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if left:
        raise UfoError(f"materialise: tensors still on the meta device: {', '.join(left[:10])}")
    return module


@dataclass
class BuiltModel:
    """An adapter instance holding only a random transformer, plus what the cases need."""

    adapter: Any  # a ModelAdapter with `.transformer` set
    adapter_cls: type
    entry: Entry
    params: int
    build_s: float

    @property
    def transformer(self) -> nn.Module:
        return self.adapter.transformer


def build(entry: Entry, adapter_cls: type, folder: Path, device: torch.device, dtype: torch.dtype,
          seed: int = 0) -> BuiltModel:
    """meta -> empty on `device` -> random init, through the family adapter; frozen, eval mode."""
    import time

    t0 = time.perf_counter()
    info = adapter_cls.inspect(folder)
    transformer = adapter_cls.build_meta(folder)["transformer"]
    materialise(transformer, device, dtype, seed)
    transformer.requires_grad_(False).eval()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    adapter = adapter_cls(info, {"transformer": transformer})
    params = sum(p.numel() for p in transformer.parameters())
    return BuiltModel(adapter, adapter_cls, entry, params, time.perf_counter() - t0)


def enable_fp8_base(transformer: nn.Module, compute_dtype: torch.dtype) -> None:
    """Base weights stored in float8_e4m3fn, upcast per layer for compute: diffusers' layerwise
    casting, exactly what `models.memory.enable_fp8_storage` applies for `train.fp8_base` and
    `model_cpu_offload_and_qfloat8` (a test checks the two agree). Not imported from there
    because that module pulls in the config layer (pydantic), which the lent GPU lacks."""
    transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype)


def add_lora(model: BuiltModel, name: str, rank: int, alpha: float) -> list[nn.Parameter]:
    """The entry's LoRA through PEFT on the adapter's resolved targets, as the trainer's
    `lora.inject.add_lora` does: only this adapter trains, its weights in fp32. Returns them."""
    from ufo_video.lora.inject import peft_config, resolve_targets

    transformer = model.transformer
    targets = resolve_targets(model.adapter_cls, transformer, model.entry.lora_targets)
    transformer.add_adapter(peft_config(rank, alpha, targets), name)
    marker, params = f".{name}.", []
    for pname, p in transformer.named_parameters():
        mine = "lora_" in pname and marker in pname
        p.requires_grad_(mine)
        if mine:
            p.data = p.data.float()
            params.append(p)
    return params


def randomise_lora_b(transformer: nn.Module, name: str, std: float = INIT_STD, seed: int = 1) -> None:
    """lora_B starts at zero; a trained LoRA is not zero (fusing and outputs then change)."""
    gen = None
    with torch.no_grad():
        for pname, p in transformer.named_parameters():
            if "lora_B" in pname and f".{name}." in pname:
                gen = gen or torch.Generator(device=p.device).manual_seed(seed)
                p.normal_(0.0, std, generator=gen)


@dataclass
class StepInputs:
    latents: torch.Tensor  # [B, C, f, h, w]
    text: dict[str, torch.Tensor]  # the adapter's named text conditioning (random)
    cond: dict[str, torch.Tensor]  # what text-to-video feeds the transformer (adapter.t2v_conditioning)
    video_tokens: int  # per sample, after patching
    text_tokens: int


def step_inputs(model: BuiltModel, size: Size, batch: int, device: torch.device, dtype: torch.dtype,
                seed: int = 0) -> StepInputs:
    """Random latents and text embeddings of a `size` clip ([frames, height, width] in pixels)."""
    adapter, entry = model.adapter, model.entry
    frames, height, width = size
    sf = adapter.spatial_factor
    if height % (sf * adapter.patch_size) or width % (sf * adapter.patch_size):
        raise UfoError(f"{entry.name}: size {size} is not a multiple of {sf * adapter.patch_size} pixels")
    latent = adapter.info.latent_channels
    f, h, w = adapter.latent_frames(frames), height // sf, width // sf
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, latent, f, h, w, generator=gen).to(device, dtype)
    text = adapter.random_text(batch, entry.text_tokens, gen, device, dtype)
    cond = adapter.t2v_conditioning(latents)
    tokens = f * (h // adapter.patch_size) * (w // adapter.patch_size)
    return StepInputs(latents, text, cond, tokens, entry.text_tokens)


def predict(model: BuiltModel, x: torch.Tensor, timesteps: torch.Tensor, inputs: StepInputs) -> torch.Tensor:
    """The family's transformer call, through the adapter."""
    return model.adapter.predict(x, timesteps, inputs.text, inputs.cond)


def free(device: torch.device) -> None:
    """Give freed blocks back (between cases, and after an OOM)."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
