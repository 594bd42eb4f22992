"""Trainable LoRA injection into a model's transformer, through PEFT.

`add_lora` resolves the configured targets (a preset of the model family or an explicit list) to
the REAL module paths of the loaded transformer, then lets PEFT wrap exactly those modules
(`transformer.add_adapter(LoraConfig(...))`). lora_B starts at zero (PEFT's
`init_lora_weights=True`), so the model's output is unchanged until training moves it.

Choice on the patch embedding: `proj` is a 2x2 stride-2 Conv2d. The reference UFO recipe wraps
every Linear and only 1x1 convolutions, so `proj` is NOT part of "all-linear" (same targets as the
reference, so files stay interchangeable with it). It can still be targeted explicitly
(`target_modules=["proj", ...]`): PEFT supports Conv2d LoRA and every tool here handles the
4-D down/up tensors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from ufo_video.errors import LoraError

#: module types a LoRA can wrap (PEFT's LoRA layers for these are what we test)
LORA_MODULE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)
#: name segments PEFT adds inside a wrapped module; never part of the model's own naming
_PEFT_SEGMENTS = frozenset(
    {"base_layer", "lora_A", "lora_B", "lora_dropout", "lora_embedding_A", "lora_embedding_B",
     "lora_magnitude_vector", "lora_bias"}
)  # fmt: skip


@dataclass
class LoraSummary:
    """What `add_lora` injected: sizes for the log and the exact module list for the checkpoint."""

    trainable: int
    base: int
    ratio: float
    target_modules: list[str] = field(default_factory=list)
    rank: int = 0
    alpha: float = 0.0

    def describe(self) -> str:
        return (
            f"LoRA rank {self.rank}, alpha {self.alpha:g} on {len(self.target_modules)} modules: "
            f"{self.trainable:,} trainable parameters = {self.ratio:.4f} x the transformer's {self.base:,}"
        )


def model_module_names(transformer: nn.Module) -> dict[str, nn.Module]:
    """The transformer's own module paths -> the base module (PEFT wrappers seen through).

    With adapters already injected, `named_modules` also lists `x.base_layer`, `x.lora_A.name`...;
    those are dropped, and a wrapped path maps to its base layer so shapes and types are the
    model's own.
    """
    out: dict[str, nn.Module] = {}
    for name, module in transformer.named_modules():
        if not name or _PEFT_SEGMENTS.intersection(name.split(".")):
            continue
        out[name] = getattr(module, "base_layer", module)
    return out


def _matches(name: str, entry: str) -> bool:
    return name == entry or name.endswith("." + entry)


def resolve_targets(
    adapter_cls: type, transformer: nn.Module, target_modules: str | list[str]
) -> list[str]:
    """Configured targets -> sorted full module paths of LoRA-able modules in `transformer`.

    An entry names a module by its full path (then only that module: `proj` is the patch
    embedding, not every `*.proj`) or else by a dotted path suffix (PEFT style: `to_q` is every
    `*.to_q`), in our (diffusers) naming or the family's original naming (`attn2.to_q`). A preset name is looked up in
    `adapter_cls.lora_target_presets()`; presets list variants of one architecture (e.g.
    `text_proj` vs `text_proj.1`), so a preset entry may match nothing as long as the preset as a
    whole matches something. Every entry of an explicit list must match a Linear/Conv2d, else a
    `LoraError` names the entries that did not.
    """
    presets = adapter_cls.lora_target_presets()
    if isinstance(target_modules, str):
        if target_modules not in presets:
            raise LoraError(
                f"lora.target_modules: unknown preset '{target_modules}'; presets: {', '.join(presets)} "
                "(or give an explicit list of module names)"
            )
        entries, from_preset = list(presets[target_modules]), True
    else:
        entries, from_preset = list(target_modules), False
        if not entries:
            raise LoraError("lora.target_modules is an empty list; name at least one module or use a preset")

    modules = model_module_names(transformer)
    originals = {name: adapter_cls.to_original_module_name(name) for name in modules}
    chosen: set[str] = set()
    unmatched: list[str] = []
    not_wrappable: list[str] = []
    for entry in entries:
        exact = [n for n in modules if entry in (n, originals[n])]
        hits = exact or [n for n in modules if _matches(n, entry) or _matches(originals[n], entry)]
        good = [n for n in hits if isinstance(modules[n], LORA_MODULE_TYPES)]
        if not good:
            if hits and not from_preset:
                kinds = sorted({type(modules[n]).__name__ for n in hits})
                not_wrappable.append(f"{entry} ({'/'.join(kinds)})")
            elif not from_preset:
                unmatched.append(entry)
        chosen.update(good)
    problems = []
    if unmatched:
        problems.append(f"match no module of the transformer: {', '.join(unmatched)}")
    if not_wrappable:
        problems.append(f"match only modules a LoRA cannot wrap (need Linear or Conv2d): {', '.join(not_wrappable)}")
    if problems:
        raise LoraError("lora.target_modules entries " + "; ".join(problems))
    if not chosen:
        raise LoraError(f"lora.target_modules preset '{target_modules}' matches no module of this transformer")
    return sorted(chosen)


def lora_param_count(transformer: nn.Module, targets: list[str], rank: int) -> int:
    """Parameters a rank-`rank` LoRA adds on `targets` (down r x in·k·k + up out x r), from shapes
    alone, so it also works on a meta-device transformer."""
    modules = model_module_names(transformer)
    total = 0
    for name in targets:
        m = modules[name]
        if isinstance(m, nn.Linear):
            total += rank * (m.in_features + m.out_features)
        else:
            kernel = int(torch.tensor(m.kernel_size).prod())
            total += rank * (m.in_channels * kernel + m.out_channels)
    return total


def peft_config(rank: int, alpha: float, targets: list[str], dropout: float = 0.0, **patterns):
    """A PEFT `LoraConfig` wrapping exactly `targets` (full paths, regex-escaped in patterns)."""
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=list(targets),
        lora_dropout=dropout,
        init_lora_weights=True,
        **patterns,
    )


def add_lora(model, lora_cfg, adapter_name: str = "ufo") -> LoraSummary:
    """Inject a trainable LoRA (`lora_cfg`: a `LoraSection`) into `model.transformer`.

    Only the new adapter's parameters require grad afterwards, and they are fp32 whatever the
    model's dtype (PEFT casts the input to the adapter's dtype and the result back); every base
    parameter (and any other adapter already loaded) is frozen. The adapter is the active one.
    """
    transformer = model.transformer
    if transformer is None:
        raise LoraError("add_lora needs the transformer loaded (components must include 'transformer')")
    if adapter_name in (getattr(transformer, "peft_config", None) or {}):
        raise LoraError(f"the transformer already has an adapter named '{adapter_name}'")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", adapter_name):
        raise LoraError(f"adapter name '{adapter_name}' must be letters, digits and '_' (it becomes a module name)")
    base = sum(p.numel() for n, p in transformer.named_parameters() if "lora_" not in n)
    targets = resolve_targets(type(model), transformer, lora_cfg.target_modules)
    transformer.add_adapter(
        peft_config(lora_cfg.rank, lora_cfg.network_alpha, targets, lora_cfg.lora_dropout), adapter_name
    )
    marker = f".{adapter_name}."
    trainable = 0
    for name, param in transformer.named_parameters():
        mine = "lora_" in name and marker in name
        param.requires_grad_(mine)
        if mine and param.is_floating_point() and param.dtype != torch.float32:
            # PEFT creates the adapter in the base dtype (bf16 for a bf16 model); the optimiser
            # needs fp32 master weights (as diffusers' `cast_training_params` does)
            param.data = param.data.float()
        trainable += param.numel() if mine else 0
    return LoraSummary(
        trainable=trainable,
        base=base,
        ratio=trainable / base if base else 0.0,
        target_modules=targets,
        rank=lora_cfg.rank,
        alpha=float(lora_cfg.network_alpha),
    )
