"""In-memory LoRA weights and how their module names meet a model.

`LoraWeights` holds a file's modules under the names the file uses; `match`/`resolve` map them to
the model's module paths through a lookup built from the model's REAL module names (never by
splitting underscores) and check shapes. Reading and writing files is `formats.py`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from ufo_video.errors import LoraError
from ufo_video.lora.inject import model_module_names

Format = Literal["kohya", "musubi", "comfy", "peft"]
#: formats whose module names are the family's ORIGINAL names with '.' -> '_' (kohya style)
FLAT_FORMATS = ("kohya", "musubi")
_LIST_LIMIT = 20


def limited(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    return shown + (f", ... ({len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else "")


@dataclass
class LoraModule:
    """One adapted module: down [r, in(, kh, kw)], up [out, r(, 1, 1)], alpha (scale = alpha / r)."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta(self) -> torch.Tensor:
        """(alpha / r) * up @ down in fp32, shaped like the base weight."""
        up = self.up.float().flatten(1)
        down = self.down.float().flatten(1)
        out = (up @ down) * self.scale
        if self.down.dim() == 4:
            return out.reshape(self.up.shape[0], *self.down.shape[1:])
        return out


@dataclass
class Resolution:
    """How a file's module names meet a model: matched paths and every kind of problem."""

    modules: dict[str, LoraModule]
    unmatched: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unmatched or self.mismatched or self.duplicates)


@dataclass
class LoraWeights:
    """A LoRA read from (or to be written to) one file.

    `modules` is keyed by the name as the format writes it: kohya / musubi -> the underscore name
    (`transformer_blocks_0_attn2_to_q`, original naming); comfy -> the dotted original path
    (`blocks.0.self_attn.q`); peft -> the dotted diffusers path.
    """

    format: Format
    modules: dict[str, LoraModule]
    metadata: dict[str, str] = field(default_factory=dict)
    source: str = "<memory>"
    #: a family-provided file format (`ModelAdapter.lora_file_formats`) that writes these modules;
    #: None for the generic formats
    family_format: Any = None

    # ---- facts -----------------------------------------------------------------------------
    @property
    def ranks(self) -> Counter:
        return Counter(m.rank for m in self.modules.values())

    @property
    def alphas(self) -> Counter:
        return Counter(m.alpha for m in self.modules.values())

    @property
    def num_params(self) -> int:
        return sum(m.down.numel() + m.up.numel() for m in self.modules.values())

    @property
    def dtypes(self) -> set[str]:
        return {str(t.dtype).replace("torch.", "") for m in self.modules.values() for t in (m.down, m.up)}

    def nonfinite(self) -> list[str]:
        """Every down/up tensor holding NaN or infinite values and every non-finite alpha, as
        `<module> down (2 NaN, 0 inf of 64 values)` / `<module> alpha = inf`: applied, such a
        LoRA turns every output into NaN, which would otherwise surface only after a whole run."""
        found = []
        for name, mod in self.modules.items():
            for part, tensor in (("down", mod.down), ("up", mod.up)):
                values = tensor.float()
                bad = int((~torch.isfinite(values)).sum())
                if bad:
                    nan = int(torch.isnan(values).sum())
                    found.append(f"{name} {part} ({nan} NaN, {bad - nan} inf of {values.numel()} values)")
            if not math.isfinite(mod.alpha):
                found.append(f"{name} alpha = {mod.alpha}")
        return found

    # ---- names -----------------------------------------------------------------------------
    def match(self, adapter, transformer: nn.Module, check_shapes: bool = True) -> Resolution:
        """Map this file's names to `transformer`'s module paths (diffusers naming) and check
        shapes, collecting every problem instead of stopping at the first. `check_shapes=False`
        is for renaming against a names-only model of another size (conversion without --model)."""
        adapter_cls = adapter if isinstance(adapter, type) else type(adapter)
        modules = model_module_names(transformer)
        # spelled name -> module path; the original naming and our (diffusers) naming of the same
        # module are both accepted. A spelling shared by two different modules is ambiguous.
        lookup: dict[str, str] = {}
        ambiguous: set[str] = set()
        for name in modules:
            for spelled in (adapter_cls.to_original_module_name(name), name):
                if self.format in FLAT_FORMATS:
                    spelled = spelled.replace(".", "_")
                if lookup.setdefault(spelled, name) != name:
                    ambiguous.add(spelled)
        res = Resolution(modules={})
        claimed: dict[str, str] = {}
        for key, mod in self.modules.items():
            path = lookup.get(key)
            if path is None:
                res.unmatched.append(key)
                continue
            if key in ambiguous:
                res.duplicates.append(f"{key} is ambiguous: several modules of the model spell it so")
                continue
            if path in claimed:
                res.duplicates.append(f"{claimed[path]} and {key} both name {path}")
                continue
            claimed[path] = key
            problem = _shape_problem(modules[path], mod) if check_shapes else None
            if problem:
                res.mismatched.append(f"{key}: {problem}")
                continue
            res.modules[path] = mod
        return res

    def resolve(
        self, adapter, transformer: nn.Module, check_shapes: bool = True
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        """diffusers module path -> (down, up, alpha); `LoraError` listing every key that matches
        no module, every shape mismatch and every module named twice."""
        res = self.match(adapter, transformer, check_shapes)
        if not res.ok:
            parts = []
            if res.unmatched:
                parts.append(f"keys matching no module of the model ({len(res.unmatched)}): {limited(res.unmatched)}")
            if res.mismatched:
                parts.append(f"shape mismatches ({len(res.mismatched)}): {limited(res.mismatched)}")
            if res.duplicates:
                parts.append(f"modules named twice: {limited(res.duplicates)}")
            raise LoraError(
                f"{self.source}: this LoRA does not fit the model (is it for another model or size?)\n  "
                + "\n  ".join(parts)
            )
        return {path: (m.down, m.up, m.alpha) for path, m in res.modules.items()}


def _shape_problem(module: nn.Module, mod: LoraModule) -> str | None:
    down, up = tuple(mod.down.shape), tuple(mod.up.shape)
    if isinstance(module, nn.Linear):
        want_down, want_up = (mod.rank, module.in_features), (module.out_features, mod.rank)
    elif isinstance(module, nn.Conv2d):
        want_down = (mod.rank, module.in_channels, *module.kernel_size)
        want_up = (module.out_channels, mod.rank, 1, 1)
    else:
        return f"module is a {type(module).__name__}, not a Linear or Conv2d"
    if down != want_down or up != want_up:
        return f"down {list(down)} up {list(up)}, model needs down {list(want_down)} up {list(want_up)}"
    return None


def group_targets(names: list[str]) -> dict[str, int]:
    """Module names grouped across blocks (`transformer_blocks.*.attn1.to_q`, `blocks_*_ffn_0` -> count):
    the first run of digits between separators is the block index, whatever the block list is called."""
    counts: Counter = Counter(re.sub(r"([._])\d+([._])", r"\1*\2", n, count=1) for n in names)
    return dict(sorted(counts.items()))
