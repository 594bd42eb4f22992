"""The LTX-2 LoRA file format that both diffusers and ComfyUI load natively.

Keys: `diffusion_model.<original LTX-2 module>.lora_A.weight` ([r, in]) and `.lora_B.weight`
([out, r]), one pair per adapted linear, nothing else. Why this shape:
- diffusers' `LTX2LoraLoaderMixin.lora_state_dict` converts `diffusion_model.` keys with its own
  LTX-2 renaming (`_convert_non_diffusers_ltx2_lora_to_diffusers`) and refuses any key without
  "lora" in it, so `.alpha` keys (what the Wan ComfyUI format writes) make it fail;
- ComfyUI maps every model weight `diffusion_model.<name>.weight` from the LoRA key
  `diffusion_model.<name>` (`model_lora_keys_unet`, "generic lora format") and reads
  `lora_A/lora_B` pairs; its model is keyed by the original LTX-2 names (Lightricks' checkpoints).
- Alpha: ComfyUI takes it only from a `<name>.alpha` key (scale alpha/r, else 1.0) and ignores
  file metadata; diffusers without alphas or adapter metadata uses scale 1.0 per module, even
  for mixed ranks (`get_peft_kwargs` mirrors ranks into alphas). So the writer folds each
  module's PEFT scale (alpha / r) into `lora_B` and writes no alpha anywhere: both loaders then
  compute exactly `W + B' A` = `W + (alpha/r) B A`.

Names: diffusers kept LTX-2's original module names except a few top-level modules (and norms,
which no LoRA targets); the table below is the inverse of diffusers' own conversion, and the tests
check it against that conversion for every linear of both versions' transformers.

Reading is lenient where it is exact: files from other trainers with `.alpha` keys are folded the
same way; `text_embedding_projection.` (connector) keys, unknown suffixes, half pairs and
mis-shaped tensors are errors naming the key.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from ufo_video.errors import UfoError

PREFIX = "diffusion_model."
FORMAT_NAME = "ltx2-comfy"
# diffusers name -> original LTX-2 name, for the first path component (top-level modules)
_TOP_LEVEL = {
    "proj_in": "patchify_proj",
    "audio_proj_in": "audio_patchify_proj",
    "time_embed": "adaln_single",
    "audio_time_embed": "audio_adaln_single",
    "av_cross_attn_video_scale_shift": "av_ca_video_scale_shift_adaln_single",
    "av_cross_attn_video_a2v_gate": "av_ca_a2v_gate_adaln_single",
    "av_cross_attn_audio_scale_shift": "av_ca_audio_scale_shift_adaln_single",
    "av_cross_attn_audio_v2a_gate": "av_ca_v2a_gate_adaln_single",
    "prompt_adaln": "prompt_adaln_single",
    "audio_prompt_adaln": "audio_prompt_adaln_single",
}
# inside any module path (norms and modulation tables; listed so names round-trip, never LoRA targets)
_ANYWHERE = {
    "norm_q": "q_norm",
    "norm_k": "k_norm",
    "video_a2v_cross_attn_scale_shift_table": "scale_shift_table_a2v_ca_video",
    "audio_a2v_cross_attn_scale_shift_table": "scale_shift_table_a2v_ca_audio",
}
_TOP_BACK = {v: k for k, v in _TOP_LEVEL.items()}
_ANY_BACK = {v: k for k, v in _ANYWHERE.items()}


class Ltx2LoraFormatError(UfoError):
    """A LoRA file that is not an LTX-2 transformer LoRA this module can read exactly."""


def to_original_module_name(name: str) -> str:
    """diffusers module path -> LTX-2's original module path (what ComfyUI's model is keyed by)."""
    parts = name.split(".")
    parts[0] = _TOP_LEVEL.get(parts[0], parts[0])
    return ".".join(_ANYWHERE.get(p, p) for p in parts)


def from_original_module_name(name: str) -> str:
    """LTX-2's original module path -> diffusers module path (inverse of `to_original_module_name`)."""
    parts = name.split(".")
    parts[0] = _TOP_BACK.get(parts[0], parts[0])
    return ".".join(_ANY_BACK.get(p, p) for p in parts)


def peft_modules(transformer: torch.nn.Module, adapter_name: str = "default") -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """A PEFT-wrapped transformer's adapter: diffusers module name -> (A, B, scale), scale = alpha / r
    of that module (PEFT's own `scaling`, so rank and alpha patterns are honoured)."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
    for name, module in transformer.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if isinstance(lora_a, torch.nn.ModuleDict) and adapter_name in lora_a:
            out[name] = (lora_a[adapter_name].weight, module.lora_B[adapter_name].weight, float(module.scaling[adapter_name]))
    if not out:
        raise Ltx2LoraFormatError(f"the transformer has no LoRA adapter named {adapter_name!r}")
    return out


def to_file_tensors(modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]]) -> dict[str, torch.Tensor]:
    """The file's tensors: original names, scale folded into lora_B (computed in float32)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, (a, b, scale) in sorted(modules.items()):
        key = PREFIX + to_original_module_name(name)
        tensors[f"{key}.lora_A.weight"] = a.detach().contiguous().clone()
        folded = b.detach().float() * scale if scale != 1.0 else b.detach().float()
        tensors[f"{key}.lora_B.weight"] = folded.to(b.dtype).contiguous()
    return tensors


def save(path: str | Path, transformer: torch.nn.Module, adapter_name: str = "default") -> Path:
    """Write the adapter of a PEFT-wrapped `LTX2VideoTransformer3DModel` in this format (the caller
    owns atomicity and overwrite checks; the lead's `lora/` code wraps this)."""
    from safetensors.torch import save_file

    modules = peft_modules(transformer, adapter_name)
    ranks = Counter(int(a.shape[0]) for a, _, _ in modules.values())
    info = {"format": FORMAT_NAME, "ranks": dict(ranks), "scale_folded_into_lora_B": True}
    save_file(to_file_tensors(modules), str(path), metadata={"format": "pt", "ufo_video": json.dumps(info)})
    return Path(path)


def from_file_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """File tensors -> diffusers module name -> (A, B) with any `.alpha` folded into B (scale 1)."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("text_embedding_projection."):
            raise Ltx2LoraFormatError(f"{key}: a LoRA on the text connectors; only transformer LoRAs are supported")
        if not key.startswith(PREFIX):
            raise Ltx2LoraFormatError(f"{key}: not an LTX-2 transformer LoRA key (expected the {PREFIX!r} prefix)")
        for suffix in (".lora_A.weight", ".lora_B.weight", ".alpha"):
            if key.endswith(suffix):
                module = from_original_module_name(key[len(PREFIX) : -len(suffix)])
                pairs.setdefault(module, {})[suffix] = value
                break
        else:
            raise Ltx2LoraFormatError(f"{key}: unknown LoRA key suffix (expected lora_A.weight / lora_B.weight / alpha)")
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for module, parts in sorted(pairs.items()):
        a, b = parts.get(".lora_A.weight"), parts.get(".lora_B.weight")
        if a is None or b is None:
            raise Ltx2LoraFormatError(f"{PREFIX}{to_original_module_name(module)}: lora_A and lora_B must both be present")
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise Ltx2LoraFormatError(f"{PREFIX}{to_original_module_name(module)}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} do not pair")
        if ".alpha" in parts:
            b = (b.float() * (float(parts[".alpha"]) / a.shape[0])).to(b.dtype)
        out[module] = (a, b)
    return out


def load(path: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from safetensors.torch import load_file

    return from_file_tensors(load_file(str(path)))


def apply_to_transformer(transformer: Any, modules: dict[str, tuple[torch.Tensor, torch.Tensor]], adapter_name: str = "default") -> int:
    """Add the LoRA as a PEFT adapter (alpha = rank per module, scale 1, as stored) and load its
    tensors strictly: every module must exist and match its shape. Returns the module count."""
    from peft import LoraConfig, set_peft_model_state_dict

    linear = {n for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = sorted(set(modules) - linear)
    if missing:
        raise Ltx2LoraFormatError(f"the LoRA names {len(missing)} modules this transformer lacks, e.g. {missing[0]}")
    ranks = {n: int(a.shape[0]) for n, (a, _) in modules.items()}
    r = Counter(ranks.values()).most_common(1)[0][0]
    pattern = {n: k for n, k in ranks.items() if k != r}
    config = LoraConfig(r=r, lora_alpha=r, rank_pattern=pattern, alpha_pattern=dict(pattern), target_modules=sorted(modules))
    transformer.add_adapter(config, adapter_name=adapter_name)
    state = {f"{n}.lora_A.weight": a for n, (a, _) in modules.items()} | {f"{n}.lora_B.weight": b for n, (_, b) in modules.items()}
    result = set_peft_model_state_dict(transformer, state, adapter_name=adapter_name)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise Ltx2LoraFormatError(f"LoRA tensors not used by the transformer: {unexpected[:3]}")
    return len(modules)


class Ltx2ComfyFormat:
    """This format as a family-provided LoRA file format (`ModelAdapter.lora_file_formats`): the
    generic `lora/` code converts a LoRA to `reads_as` names (ComfyUI's: `diffusion_model.` + the
    original dotted path), then `fold` puts each module's scale into its up tensor and `tensors`
    spells the file's keys. A file written so reads back as a `reads_as` file with alpha = rank
    (no `.alpha` keys), which is exactly what it means. Works on any module objects with `down`,
    `up`, `alpha` and `rank` (the `lora/` code's `LoraModule`), so `models/` imports nothing from `lora/`."""

    name = FORMAT_NAME
    reads_as = "comfy"

    @staticmethod
    def fold(modules: dict[str, Any]) -> dict[str, Any]:
        """Each module with alpha / rank folded into `up` (in float32, cast back) and alpha = rank."""
        out = {}
        for key, mod in modules.items():
            scale = mod.alpha / mod.rank
            up = mod.up if scale == 1.0 else (mod.up.float() * scale).to(mod.up.dtype)
            out[key] = type(mod)(down=mod.down, up=up, alpha=float(mod.rank))
        return out

    @staticmethod
    def tensors(modules: dict[str, Any], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The file's tensors for folded modules keyed by original dotted names: lora_A / lora_B only."""
        out: dict[str, torch.Tensor] = {}
        for key, mod in modules.items():
            if mod.alpha != float(mod.rank):
                raise Ltx2LoraFormatError(f"{key}: alpha {mod.alpha} != rank {mod.rank}; fold the scale first")
            down, up = (mod.down, mod.up) if dtype is None else (mod.down.to(dtype), mod.up.to(dtype))
            out[f"{PREFIX}{key}.lora_A.weight"] = down
            out[f"{PREFIX}{key}.lora_B.weight"] = up
        return out


LTX2_COMFY = Ltx2ComfyFormat()
