"""`ufo-video model check`: what a model folder is, how big, and what each memory mode needs.

With `--meta` nothing but configs and safetensors headers is read: the components are built on
the meta device and the weight files' tensor names and shapes are compared with them, so a
40 GB download can be checked in seconds without the RAM to load it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ufo_video.config import MEMORY_MODES
from ufo_video.models.registry import adapter_for
from ufo_video.models.weights import compare_keys, count_parameters, expected_shapes

GIB = 1024**3


@dataclass
class ComponentReport:
    name: str
    parameters: int
    dtypes: list[str]
    largest_leaf: int
    largest_block: int


@dataclass
class CheckReport:
    path: str
    family: str
    layout: str
    variant: str
    components: list[ComponentReport] = field(default_factory=list)
    memory_gib: dict[str, float] = field(default_factory=dict)
    configs_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "family": self.family, "layout": self.layout, "variant": self.variant,
            "components": [c.__dict__ for c in self.components], "memory_gib": self.memory_gib,
            "configs_only": self.configs_only,
        }  # fmt: skip


def _leaf_sizes(module: nn.Module) -> int:
    sizes = [sum(p.numel() for p in m.parameters(recurse=False)) for m in module.modules()]
    return max(sizes, default=0)


def _block_size(module: nn.Module) -> int:
    """Largest element of any ModuleList (a transformer/decoder block): what block-level group
    offload keeps on the accelerator at once. Modules outside lists count as leaves."""
    blocks = [count_parameters(b) for m in module.modules() if isinstance(m, nn.ModuleList) for b in m]
    return max(blocks + [_leaf_sizes(module)])


def _component_report(name: str, module: nn.Module) -> ComponentReport:
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in module.parameters()})
    return ComponentReport(name, count_parameters(module), dtypes, _leaf_sizes(module), _block_size(module))


def estimate_memory_gib(components: list[ComponentReport], bytes_per_param: int = 2) -> dict[str, float]:
    """Weights resident on the accelerator per memory mode, in GiB at `bytes_per_param` (bf16 = 2).

    Activations, the CUDA context and the LoRA come on top; these are lower bounds for planning.
    """
    by_name = {c.name: c for c in components}
    sizes = {c.name: c.parameters * bytes_per_param for c in components}
    fp8_sizes = dict(sizes)
    for name, comp in by_name.items():
        if name.startswith("transformer"):  # every denoiser (both experts of a two-expert model)
            fp8_sizes[name] = comp.parameters  # 1 byte per weight
    result = {
        "model_full_load": sum(sizes.values()),
        "model_cpu_offload": max(sizes.values(), default=0),
        "model_cpu_offload_and_qfloat8": max(fp8_sizes.values(), default=0),
        "sequential_cpu_offload": max((c.largest_leaf for c in components), default=0) * bytes_per_param,
        "group_offload": max((c.largest_block for c in components), default=0) * bytes_per_param,
    }
    assert set(result) == set(MEMORY_MODES)
    return {k: v / GIB for k, v in result.items()}


def check_model(path: str | Path, meta: bool = False) -> CheckReport:
    """Load (or, with `meta`, only describe and header-check) a model folder; raise on problems."""
    path = Path(path)
    adapter = adapter_for(path)
    info = adapter.inspect(path)
    report = CheckReport(str(path), info.family, info.layout, info.variant)
    if meta:
        modules = adapter.build_meta(path)
        if adapter.has_weights(path):
            for comp, shapes in adapter.weight_shapes(path).items():
                compare_keys(expected_shapes(modules[comp]), shapes, str(path / comp))
        else:
            report.configs_only = True
    else:
        loaded = adapter.load(path, dtype=torch.float32)
        modules = {k: getattr(loaded, k) for k in ("transformer", "vae", "text_encoder")}
        modules.update({k: m for k, m in loaded.extra_components.items() if isinstance(m, nn.Module)})
    for name, module in modules.items():
        report.components.append(_component_report(name, module))
    report.memory_gib = estimate_memory_gib(report.components)
    return report


def _weights_line(report: CheckReport, meta: bool) -> str:
    if report.configs_only:
        return "none present - configs only (parameter counts from configs; nothing to load yet)"
    if meta:
        return "tensor names and shapes match the configs (safetensors headers only, --meta)"
    return "loaded strictly, every tensor present with the right shape"


def _human_bytes(gib: float) -> str:
    return f"{gib:9.2f} GiB" if gib >= 0.1 else f"{gib * 1024:9.2f} MiB"


def format_report(report: CheckReport, meta: bool) -> str:
    lines = [
        f"model:   {report.path}",
        f"family:  {report.family}   layout: {report.layout}   variant: {report.variant}",
        "weights: " + _weights_line(report, meta),
        "",
        f"{'component':<14}{'parameters':>18}  dtypes",
    ]
    for c in report.components:
        shown = "(meta)" if meta else ", ".join(c.dtypes)
        lines.append(f"{c.name:<14}{c.parameters:>18,}  {shown}")
    lines += ["", "estimated GPU memory for weights in bf16 (activations extra):"]
    for mode, gib in report.memory_gib.items():
        lines.append(f"  {mode:<32}{_human_bytes(gib)}")
    return "\n".join(lines)
