"""`ufo-video model check`: what a model folder is, how big, and what each memory mode needs.

With `--meta` nothing but configs and safetensors headers is read: the components are built on
the meta device and the weight files' tensor names and shapes are compared with them, so a
40 GB download can be checked in seconds without the RAM to load it. A configs-only folder whose
files equal one of the shipped configs is answered from `models.meta_summary`'s store (the same
report, generated from these classes and tested against them) without importing diffusers.

Without `--meta` the same header check runs, then every tensor of every component is read once,
one at a time, and checked for NaN/inf (a corrupt download is named, tensor and file); nothing is
loaded in fp32 and nothing is held twice. The text encoder, whose checkpoint names only its own
library can map, is loaded by that library at its stored dtype to check its names and shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ufo_video.config import MEMORY_MODES

if TYPE_CHECKING:
    from torch import nn

# torch, the registry and models.weights are imported where a model is built: the stored path of
# `--meta` (see the module doc) needs none of them

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
    licence: str | None = None  # the adapter's `licence` note (None: nothing to flag)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "family": self.family, "layout": self.layout, "variant": self.variant,
            "components": [c.__dict__ for c in self.components], "memory_gib": self.memory_gib,
            "configs_only": self.configs_only, "licence": self.licence,
        }  # fmt: skip


def _leaf_sizes(module: nn.Module) -> int:
    sizes = [sum(p.numel() for p in m.parameters(recurse=False)) for m in module.modules()]
    return max(sizes, default=0)


def _block_size(module: nn.Module) -> int:
    """Largest element of any ModuleList (a transformer/decoder block): what block-level group
    offload keeps on the accelerator at once. Modules outside lists count as leaves."""
    from torch import nn

    from ufo_video.models.weights import count_parameters

    blocks = [count_parameters(b) for m in module.modules() if isinstance(m, nn.ModuleList) for b in m]
    return max(blocks + [_leaf_sizes(module)])


def _component_report(name: str, module: nn.Module, dtypes: list[str] | None = None) -> ComponentReport:
    from ufo_video.models.weights import count_parameters

    if dtypes is None:
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
        # + one scale (bf16) per 64 weights
        "model_cpu_offload_and_fp8_scaled": max((n + n * 2 // 64 for n in fp8_sizes.values()), default=0),
        "sequential_cpu_offload": max((c.largest_leaf for c in components), default=0) * bytes_per_param,
        "group_offload": max((c.largest_block for c in components), default=0) * bytes_per_param,
    }
    assert set(result) == set(MEMORY_MODES)
    return {k: v / GIB for k, v in result.items()}


_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                       "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "I64": "int64", "I32": "int32",
                       "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _file_dtypes(files: list[Path]) -> list[str]:
    from ufo_video.models.weights import read_header_shapes

    found = {d for _, d in read_header_shapes(files).values()}
    return sorted(_SAFETENSORS_DTYPES.get(d, d.lower()) for d in found)


def _verify_weights(adapter: Any, path: Path, modules: dict[str, nn.Module]) -> dict[str, list[str]]:
    """Names, shapes (headers) and finiteness (tensor by tensor) of every component; returns the
    stored dtypes per component. Peak memory: one tensor, plus the text encoder at its stored
    dtype while its own library checks its names."""
    import torch

    from ufo_video.models.weights import check_finite, compare_keys, expected_shapes, find_weight_files

    shapes = adapter.weight_shapes(path)
    for comp, found in shapes.items():
        compare_keys(expected_shapes(modules[comp]), found, str(path / comp))
    dtypes: dict[str, list[str]] = {}
    for comp in modules:
        files = find_weight_files(path / comp)
        dtypes[comp] = _file_dtypes(files)
        if comp not in shapes:  # checkpoint names only its library can map: let it load them, as stored
            stored = next((getattr(torch, d) for d in dtypes[comp] if d in ("bfloat16", "float16", "float32")),
                          torch.float32)
            loaded = adapter.load(path, dtype=stored, components=(comp,))
            del loaded
        check_finite(files, str(path / comp))
    return dtypes


def check_model(path: str | Path, meta: bool = False, use_store: bool = True) -> CheckReport:
    """Describe and header-check a model folder; without `meta` also read every tensor once to
    check it is finite. Raise on problems. `use_store=False` always builds the classes (what
    generates and tests the store)."""
    path = Path(path)
    if meta and use_store:
        from ufo_video.models.meta_summary import cached_report

        stored = cached_report(path)
        if stored is not None:
            components = [ComponentReport(**c) for c in stored["components"]]
            return CheckReport(str(path), stored["family"], stored["layout"], stored["variant"], components,
                               estimate_memory_gib(components), stored["configs_only"], stored["licence"])  # fmt: skip
    from ufo_video.models.registry import adapter_for
    from ufo_video.models.weights import compare_keys, expected_shapes

    adapter = adapter_for(path)
    info = adapter.inspect(path)
    report = CheckReport(str(path), info.family, info.layout, info.variant, licence=adapter.licence)
    modules = adapter.build_meta(path)
    dtypes: dict[str, list[str]] = {}
    if not adapter.has_weights(path):
        if not meta:
            from ufo_video.errors import ModelLoadError

            raise ModelLoadError(f"{path}: no weight files (configs only); use --meta to check the configs")
        report.configs_only = True
    elif meta:
        for comp, shapes in adapter.weight_shapes(path).items():
            compare_keys(expected_shapes(modules[comp]), shapes, str(path / comp))
    else:
        dtypes = _verify_weights(adapter, path, modules)
    for name, module in modules.items():
        report.components.append(_component_report(name, module, dtypes.get(name)))
    report.memory_gib = estimate_memory_gib(report.components)
    return report


def _weights_line(report: CheckReport, meta: bool) -> str:
    if report.configs_only:
        return "none present - configs only (parameter counts from configs; nothing to load yet)"
    if meta:
        return "tensor names and shapes match the configs (safetensors headers only, --meta)"
    return "checked strictly, every tensor present with the right shape and finite (read one at a time)"


def _human_bytes(gib: float) -> str:
    return f"{gib:9.2f} GiB" if gib >= 0.1 else f"{gib * 1024:9.2f} MiB"


def format_report(report: CheckReport, meta: bool) -> str:
    lines = [
        f"model:   {report.path}",
        f"family:  {report.family}   layout: {report.layout}   variant: {report.variant}",
        "weights: " + _weights_line(report, meta),
        *([f"licence: {report.licence}"] if report.licence else []),
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
