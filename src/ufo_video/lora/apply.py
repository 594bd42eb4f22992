"""Applying LoRA files to a loaded model: several at once, each with its own weight.

Every file becomes a PEFT adapter on `model.transformer` (same ranks, alphas and modules as the
file, names resolved through the model's real module names), so the LoRA branch runs unfused:
`W x + weight * (alpha / r) * up(down(x))`, computed separately from the frozen weight, so a
small weight (UFO's 0.05-0.2) is never rounded away by bf16 weights.

* An adapter at weight 0 is deactivated rather than scaled by 0, so the output is bitwise the
  base model's (not merely close).
* `fuse_loras` merges in fp32 and casts once to the weight's dtype. PEFT's own `merge` computes
  the delta in the weight dtype off-CPU and adds it in that dtype (two roundings), and its
  `unmerge` subtracts, which cannot restore bf16 weights exactly. So the merge is done here, with
  a copy of each original weight kept (on the CPU, in its own dtype) so `unfuse_loras` restores
  it bit for bit. That copy costs the size of the adapted weights in host RAM; `bake` fuses
  with `keep_original=False` because it never unfuses.

State (which adapters this module loaded, their weights, the fused originals) lives on the
transformer as `_ufo_lora`, a plain attribute (not a parameter or buffer).

Multi-expert models (two denoisers split by timestep): a file whose metadata names an expert (`ufo_expert`, written
by `save_lora`) goes to that expert's transformer; other files go to `transformer`, as diffusers'
`load_lora_weights` does by default. Every function below works on all loaded experts.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ufo_video.errors import LoraError
from ufo_video.lora.formats import LoraModule, read_lora
from ufo_video.lora.inject import peft_config

_STATE_ATTR = "_ufo_lora"


@dataclass
class _LoraState:
    weights: dict[str, float] = field(default_factory=dict)  # adapter name -> weight
    loaded: list[str] = field(default_factory=list)  # adapters created by load_loras
    fused: bool = False
    originals: dict[str, torch.Tensor] = field(default_factory=dict)  # module path -> weight before fusing


def _transformer(model) -> nn.Module:
    transformer = getattr(model, "transformer", None)
    if transformer is None:
        raise LoraError("applying a LoRA needs the transformer loaded (components must include 'transformer')")
    return transformer


def _experts(model) -> dict[str, nn.Module]:
    """Expert component name -> loaded transformer (just `transformer` for one-expert models)."""
    out = {"transformer": _transformer(model)}
    extra = getattr(model, "extra_components", {}) or {}
    experts = model.experts() if hasattr(model, "experts") else ()
    for expert in experts:
        module = extra.get(expert.component)
        if expert.component != "transformer" and module is not None and module is not out["transformer"]:
            out[expert.component] = module
    return out


def check_family(model, lora, path: Path) -> None:
    """A file whose metadata names the family it was trained for (`ufo_base_family`, written by
    `save_lora`) is refused on a model of another family in one line, before its keys are matched:
    a list of unmatched names would hide the reason. Files without that metadata are matched by name."""
    info = getattr(model, "info", None)
    trained = lora.metadata.get("ufo_base_family")
    if info is not None and trained and trained != info.family:
        raise LoraError(
            f"{path}: this LoRA was trained for a {trained} model (its metadata ufo_base_family), but "
            f"{info.path} is a {info.family} model; use a LoRA trained on a {info.family} model"
        )


def expert_of_file(model, lora, path: Path, given: str | None = None) -> str:
    """The expert a LoRA file is for: `given` (the user named it: `PATH@EXPERT`, for files made
    elsewhere, e.g. a distillation LoRA's high- and low-noise files, which carry no metadata), else
    its `ufo_expert` metadata on a multi-expert model, else `transformer`; an expert this model
    lacks is refused."""
    experts = _experts(model)
    wanted = given or lora.metadata.get("ufo_expert") or "transformer"
    if wanted not in experts:
        names = [e.component for e in model.experts()] if hasattr(model, "experts") else ["transformer"]
        source = "as given after @" if given else "its metadata ufo_expert"
        raise LoraError(
            f"{path}: this LoRA is for the expert '{wanted}' ({source}), but the model "
            f"has {', '.join(names)}" + (" (loaded: " + ", ".join(experts) + ")" if set(names) != set(experts) else "")
        )
    return wanted


def _state(transformer: nn.Module) -> _LoraState:
    state = getattr(transformer, _STATE_ATTR, None)
    if state is None:
        state = _LoraState()
        setattr(transformer, _STATE_ATTR, state)
    return state


def _adapter_names(transformer: nn.Module) -> list[str]:
    return list((getattr(transformer, "peft_config", None) or {}).keys())


def _sync(transformer: nn.Module, state: _LoraState) -> None:
    """Adapters added elsewhere (e.g. `add_lora`'s training adapter) count at weight 1.0."""
    names = _adapter_names(transformer)
    for name in names:
        state.weights.setdefault(name, 1.0)
    for name in [n for n in state.weights if n not in names]:
        del state.weights[name]


def _unique_name(stem: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", stem) or "lora"
    if base[0].isdigit():
        base = "lora_" + base
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


def _wrapped_modules(transformer: nn.Module, adapter: str):
    """(path, PEFT LoRA layer) for every module the adapter wraps."""
    for path, module in transformer.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if isinstance(lora_a, nn.ModuleDict) and adapter in lora_a:
            yield path, module


def _activate(transformer: nn.Module, state: _LoraState) -> None:
    """Make exactly the adapters with a non-zero weight active, at those weights.

    PEFT's `set_adapter` also flips `requires_grad` on (active) and off (inactive); that is undone
    so activating a LoRA for validation never makes it trainable or freezes a training adapter.
    """
    _sync(transformer, state)
    grads = {n: p.requires_grad for n, p in transformer.named_parameters() if "lora_" in n}
    active = [n for n, w in state.weights.items() if w != 0.0]
    if active:
        transformer.enable_lora()
        transformer.set_adapters(active, [state.weights[n] for n in active])
    else:
        transformer.disable_lora()
    for n, p in transformer.named_parameters():
        if n in grads:
            p.requires_grad_(grads[n])


def _branch_dtype(file_dtype: torch.dtype, base_dtype: torch.dtype) -> torch.dtype:
    """The dtype a file's LoRA is held and computed in: the wider of the file's and the base
    weight's (a float8 storage dtype is not a compute dtype: the file's then)."""
    if base_dtype.itemsize < 2 or not base_dtype.is_floating_point:
        return file_dtype
    return torch.promote_types(file_dtype, base_dtype)


def _stored_in_low_precision(layer: nn.Module) -> bool:
    """True when the base weight lives in an 8-bit float (fp8 storage / layerwise casting)."""
    weight = getattr(layer.get_base_layer(), "weight", None)
    return weight is not None and weight.dtype.itemsize == 1 and weight.dtype.is_floating_point


def _add_file_adapter(transformer: nn.Module, name: str, resolved: dict[str, tuple]) -> None:
    """One PEFT adapter holding a file's tensors; ranks and alphas may differ per module."""
    ranks = Counter(int(d.shape[0]) for d, _, _ in resolved.values())
    alphas = Counter(a for _, _, a in resolved.values())
    rank, alpha = ranks.most_common(1)[0][0], alphas.most_common(1)[0][0]
    # PEFT reads pattern keys as regexes on the module path: escape the dots of full paths
    rank_pattern = {re.escape(p): int(d.shape[0]) for p, (d, _, _) in resolved.items() if d.shape[0] != rank}
    alpha_pattern = {re.escape(p): a for p, (_, _, a) in resolved.items() if a != alpha}
    config = peft_config(rank, alpha, sorted(resolved), 0.0, rank_pattern=rank_pattern, alpha_pattern=alpha_pattern)
    with warnings.catch_warnings():
        # PEFT warns that a second adapter joins the first: several LoRAs at once is the point here
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        transformer.add_adapter(config, name)
    modules = dict(transformer.named_modules())
    with torch.no_grad():
        for path, (down, up, a) in resolved.items():
            layer = modules[path]
            # PEFT creates the adapter in the base weight's dtype (bf16 for a bf16 model) and
            # runs the branch in the adapter's dtype. Hold the file's values in the wider of the
            # two: an fp32 file on a bf16 model keeps fp32; a bf16 file on an fp32 model is
            # widened (exactly) to fp32, so the branch is not computed in, and rounded to, bf16
            dtype = _branch_dtype(down.dtype, layer.get_base_layer().weight.dtype)
            layer.lora_A[name].to(dtype)
            layer.lora_B[name].to(dtype)
            layer.lora_A[name].weight.copy_(down)
            layer.lora_B[name].weight.copy_(up)
            if layer.r[name] != down.shape[0] or layer.lora_alpha[name] != a:  # pragma: no cover - PEFT contract
                raise RuntimeError(f"PEFT built {path} with r={layer.r[name]} alpha={layer.lora_alpha[name]}, expected {down.shape[0]}/{a}")
            layer.lora_A[name].weight.requires_grad_(False)
            layer.lora_B[name].weight.requires_grad_(False)


def load_loras(model, specs: list[tuple], fuse: bool = False) -> list[str]:
    """Load each `(file, weight)` or `(file, weight, expert)` as its own adapter and activate them
    all at their weights (`expert`: where it goes, overriding the file's metadata; None = as the
    metadata says).

    Every file is read and checked against the model before anything is added, so a bad file
    leaves the model untouched. Returns the adapter names (file stems made unique), for
    `set_lora_weights`.
    """
    if not specs:
        return []
    experts = _experts(model)
    prepared = []
    for path, weight, *given in specs:
        lora = read_lora(path)
        check_family(model, lora, Path(path))
        expert = expert_of_file(model, lora, Path(path), given[0] if given else None)
        prepared.append((Path(path), float(weight), expert, lora.resolve(model, experts[expert])))
    refuse = any(_state(t).fused for t in experts.values())
    if refuse:
        unfuse_loras(model)
    taken = {n for t in experts.values() for n in _adapter_names(t)}
    names = []
    for path, weight, expert, resolved in prepared:
        transformer, state = experts[expert], _state(experts[expert])
        name = _unique_name(path.stem, taken)
        taken.add(name)
        _add_file_adapter(transformer, name, resolved)
        state.weights[name] = weight
        state.loaded.append(name)
        names.append(name)
    for transformer in experts.values():
        if hasattr(transformer, "peft_config"):
            _activate(transformer, _state(transformer))
    if fuse or refuse:
        fuse_loras(model)
    return names


def set_lora_weights(model, weights: dict[str, float]) -> None:
    """Change adapter weights without reloading (0 deactivates the adapter exactly).

    Names are adapter names from `load_loras` (or `add_lora`'s); a fused model is unfused,
    re-weighted and fused again.
    """
    experts = _experts(model)
    owner = {n: t for t in experts.values() for n in _adapter_names(t)}
    unknown = [n for n in weights if n not in owner]
    if unknown:
        raise LoraError(f"unknown LoRA adapter(s): {', '.join(unknown)}; loaded: {', '.join(owner) or 'none'}")
    refuse = any(_state(t).fused for t in experts.values() if hasattr(t, "peft_config"))
    if refuse:
        unfuse_loras(model)
    for transformer in {id(t): t for t in owner.values()}.values():
        state = _state(transformer)
        _sync(transformer, state)
        state.weights.update({k: float(v) for k, v in weights.items() if owner[k] is transformer})
        _activate(transformer, state)
    if refuse:
        fuse_loras(model)


def _fused_delta(layer: nn.Module, weights: dict[str, float]) -> torch.Tensor | None:
    """sum over adapters of weight * (alpha / r) * up @ down, in fp32, shaped like the weight."""
    total = None
    for name, w in weights.items():
        if w == 0.0 or name not in layer.lora_A:
            continue
        mod = LoraModule(layer.lora_A[name].weight, layer.lora_B[name].weight, float(layer.lora_alpha[name]))
        delta = w * mod.delta()
        total = delta if total is None else total + delta
    return total


def fuse_loras(model, keep_original: bool = True) -> None:
    """Merge the active adapters into the base weights: `W <- cast(fp32(W) + fp32 delta)`.

    Afterwards the adapters are disabled (the forward runs the merged weights only).
    `keep_original=False` skips the copy needed by `unfuse_loras` (for baking).
    """
    for transformer in _experts(model).values():
        if hasattr(transformer, "peft_config"):
            _fuse_one(transformer, keep_original)


def _fuse_one(transformer: nn.Module, keep_original: bool) -> None:
    state = _state(transformer)
    if state.fused:
        return
    _sync(transformer, state)
    lora_layers = [(p, m) for p, m in transformer.named_modules() if isinstance(getattr(m, "lora_A", None), nn.ModuleDict)]
    fp8 = [p for p, m in lora_layers if _stored_in_low_precision(m)]
    if fp8:
        raise LoraError(
            f"cannot fuse LoRAs into weights stored in fp8 ({fp8[0]} ...): 3 mantissa bits round a small "
            "weight's delta away. Drop --fuse (infer.fuse_lora) to keep the LoRA unfused on top of the fp8 "
            "base (GPU_memory_mode=model_cpu_offload_and_qfloat8), or use another memory mode"
        )
    with torch.no_grad():
        for path, layer in lora_layers:
            delta = _fused_delta(layer, state.weights)
            if delta is None:
                continue
            weight = layer.get_base_layer().weight
            if keep_original:
                state.originals[path] = weight.detach().to("cpu", copy=True)
            weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))
    transformer.disable_lora()
    state.fused = True


def unfuse_loras(model) -> None:
    """Restore the exact pre-fusion weights and re-enable the adapters."""
    for transformer in _experts(model).values():
        if hasattr(transformer, _STATE_ATTR):
            _unfuse_one(transformer)


def _unfuse_one(transformer: nn.Module) -> None:
    state = _state(transformer)
    if not state.fused:
        return
    modules = dict(transformer.named_modules())
    if not state.originals and any(w != 0.0 for w in state.weights.values()):
        raise LoraError("these LoRAs were fused without keeping the original weights; reload the model to undo")
    with torch.no_grad():
        for path, original in state.originals.items():
            weight = modules[path].get_base_layer().weight
            weight.copy_(original.to(weight.device))
    state.originals.clear()
    state.fused = False
    _activate(transformer, state)


def unfuse_before_low_precision_storage(transformer: nn.Module) -> bool:
    """Called before a transformer's weights are stored in fp8: fused LoRAs are unfused (the
    originals restored bit for bit) so they run unfused, in the compute dtype, on top of the fp8
    base; casting a fused weight to fp8 would round a small weight's delta away. True when
    something was unfused (the caller tells the user)."""
    state = getattr(transformer, _STATE_ATTR, None)
    if state is None or not state.fused:
        return False
    unfuse_loras(_Holder(transformer))
    return True


class _Holder:
    """The `model.transformer` shape the functions here take, around a bare transformer."""

    def __init__(self, transformer: nn.Module) -> None:
        self.transformer = transformer


def remove_loras(model) -> None:
    """Unfuse if needed and delete the adapters `load_loras` added; with no adapter left, the
    PEFT wrappers are removed too, giving back the plain transformer."""
    unfuse_loras(model)
    for transformer in _experts(model).values():
        if hasattr(transformer, _STATE_ATTR):
            _remove_one(transformer)


def _remove_one(transformer: nn.Module) -> None:
    state = _state(transformer)
    if state.loaded:
        transformer.delete_adapters(list(state.loaded))
    for name in state.loaded:
        state.weights.pop(name, None)
    state.loaded.clear()
    if _adapter_names(transformer):
        _activate(transformer, state)
    else:
        # deleting the last adapter leaves empty PEFT wrappers (and drops `peft_config`)
        if any(hasattr(m, "base_layer") for m in transformer.modules()):
            transformer.unload_lora()
        delattr(transformer, _STATE_ATTR)


def loaded_loras(model) -> dict[str, float]:
    """Adapter name -> weight, for the adapters of every expert (for logs and reports)."""
    out: dict[str, float] = {}
    for transformer in _experts(model).values():
        if hasattr(transformer, "peft_config"):
            state = _state(transformer)
            out.update({name: state.weights.get(name, 1.0) for name in _adapter_names(transformer)})
    return out


def lora_experts(model) -> dict[str, str]:
    """Adapter name -> the expert (component) holding it, so a run on a multi-expert model can say
    where each file went (a file without `ufo_expert` metadata goes to `transformer`)."""
    return {name: expert for expert, t in _experts(model).items() for name in _adapter_names(t)}
