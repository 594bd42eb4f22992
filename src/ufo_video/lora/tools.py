"""The `ufo-video lora` tools as library functions: inspect, convert, combine, bake.

Module names always come from a real transformer (built on the meta device from a model
folder's configs, so no weights are read): `--model DIR`, or by default a family's bundled
configs (`ModelAdapter.names_model_path`): the family named in the file's metadata
(`ufo_base_family`), else the one whose module names match every module of the file. Shapes are
checked only against an explicit `--model` (the default only supplies names). The bundled
configs' names are read from the list `models.meta_summary` stores (generated from the same
classes and tested against them), so the default needs no diffusers import.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ufo_video.atomic import fsync_dir, fsync_tree, place_dir_exclusive
from ufo_video.errors import LoraError, UfoError
from ufo_video.writable import OutputError
from ufo_video.lora.formats import (
    Format,
    LoraModule,
    LoraWeights,
    check_lora_files,
    group_targets,
    read_lora,
    convert,
    to_peft,
    write_lora,
)

SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def parse_lora_spec(text: str) -> tuple[Path, float]:
    """`FILE` or `FILE:WEIGHT` (the last ':' splits, so paths with ':' still work with a weight)."""
    path, sep, weight = text.rpartition(":")
    if sep and path:
        try:
            return Path(path), float(weight)
        except ValueError:
            pass
    return Path(text), 1.0


@dataclass
class NamesModel:
    """An adapter class and its transformer on the meta device: module names and shapes only."""

    adapter_cls: type
    transformer: nn.Module
    path: Path

    @property
    def base_params(self) -> int:
        return sum(p.numel() for p in self.transformer.parameters())


def names_model(path: str | Path | None, lora: LoraWeights | None = None) -> NamesModel:
    """The transformer of `path` built on meta from configs; without `path`, a family's bundled
    configs chosen for `lora` (see module doc)."""
    from ufo_video.models.registry import ADAPTERS, adapter_for

    if path is not None:
        folder = Path(path)
        cls = adapter_for(folder)
        return NamesModel(cls, cls.build_meta(folder)["transformer"], folder)
    candidates = [c for c in ADAPTERS.values() if c.names_model_path() is not None]
    family = (lora.metadata.get("ufo_base_family") if lora is not None else None) or None
    if family in ADAPTERS:
        candidates = [ADAPTERS[family]]
    if lora is not None:
        candidates = [c for c in candidates if lora.format in c.lora_formats()] or candidates
    fallback = None
    for cls in candidates:
        folder = cls.names_model_path()
        nm = NamesModel(cls, _bundled_transformer(cls, folder), folder)
        if lora is None or lora.match(cls, nm.transformer, check_shapes=False).ok:
            return nm
        fallback = fallback or nm
    if fallback is None:
        raise LoraError("no model family can read this LoRA's names; give --model DIR")
    return fallback


def _bundled_transformer(cls: type, folder: Path) -> nn.Module:
    """The bundled configs' module names: from the stored list generated from this very folder
    (`models.meta_summary`, no diffusers import), else built on meta by the family's classes."""
    from ufo_video.models.meta_summary import cached_module_names, names_tree

    names = cached_module_names(folder)
    return names_tree(names) if names is not None else cls.build_meta(folder)["transformer"]


# ---- inspect ----------------------------------------------------------------------------------
def inspect_lora(path: str | Path, model: str | Path | None = None) -> dict[str, Any]:
    """Everything a user asks of a LoRA file; with `model`, how it fits that model."""
    lora = read_lora(path, allow_nonfinite=True)
    meta = dict(lora.metadata)
    report: dict[str, Any] = {
        "file": str(path),
        "format": lora.format,
        "modules": len(lora.modules),
        "ranks": {str(k): v for k, v in sorted(lora.ranks.items())},
        "alphas": {f"{k:g}": v for k, v in sorted(lora.alphas.items())},
        "scales": sorted({round(m.scale, 6) for m in lora.modules.values()}),
        "dtypes": sorted(lora.dtypes),
        "params": lora.num_params,
        "file_bytes": Path(path).stat().st_size,
        "targets": group_targets(list(lora.modules)),
        "nonfinite": lora.nonfinite(),
        "metadata": meta,
    }
    if model is not None:
        nm = names_model(model)
        res = lora.match(nm.adapter_cls, nm.transformer)
        report.update(
            model=str(nm.path),
            base_params=nm.base_params,
            ratio=lora.num_params / nm.base_params,
            matched=len(res.modules),
            unmatched=res.unmatched,
            shape_mismatches=res.mismatched,
            duplicates=res.duplicates,
            model_targets=group_targets(list(res.modules)),
        )
    return report


def format_inspect(report: dict[str, Any]) -> str:
    lines = [
        f"{report['file']}",
        f"  format   {report['format']}  ({report['modules']} modules, dtype {', '.join(report['dtypes'])})",
        f"  rank     {', '.join(f'{r} x{n}' for r, n in report['ranks'].items())}",
        f"  alpha    {', '.join(f'{a} x{n}' for a, n in report['alphas'].items())}  (scale alpha/rank: {', '.join(map(str, report['scales']))})",
        f"  params   {report['params']:,}  ({report['file_bytes'] / 1e6:.1f} MB on disk)",
    ]
    if "base_params" in report:
        lines.append(f"  vs model {report['ratio']:.4f} x the transformer's {report['base_params']:,} parameters")
    lines.append("  targets (grouped over blocks):")
    targets = report.get("model_targets") or report["targets"]
    lines += [f"    {name}  x{n}" for name, n in targets.items()]
    if report["nonfinite"]:
        lines.append(f"  NaN or infinite values ({len(report['nonfinite'])}): the LoRA is broken; commands that apply it refuse it")
        lines += [f"    {item}" for item in report["nonfinite"]]
    if "matched" in report:
        lines.append(f"  model    {report['model']}: {report['matched']} of {report['modules']} modules matched")
        for label in ("unmatched", "shape_mismatches", "duplicates"):
            if report[label]:
                lines.append(f"  {label.replace('_', ' ')} ({len(report[label])}):")
                lines += [f"    {item}" for item in report[label]]
    meta = {k: v for k, v in report["metadata"].items() if k != "lora_adapter_metadata"}
    if meta:
        lines.append("  metadata:")
        lines += [f"    {k}: {v if len(v) < 200 else v[:200] + '...'}" for k, v in sorted(meta.items())]
    return "\n".join(lines)


# ---- convert ----------------------------------------------------------------------------------
def convert_lora(
    src: str | Path, dst: str | Path, to: Format, model: str | Path | None = None, exclusive: bool = False
) -> tuple[LoraWeights, int]:
    """Rewrite a LoRA in the other key layout; `exclusive`: an existing `dst` is an error, never
    replaced. The tensors stay untouched (bit-exact) except where the target is a family format
    that stores a module's alpha/rank scale folded into its up tensor. Returns what was written
    and how many modules had a scale other than 1 folded in (`folded_modules`)."""
    lora = read_lora(src)
    nm = names_model(model, lora)
    shapes = model is not None  # the default names model is a bundled config: names only, any size
    out = convert(lora, to, nm.adapter_cls, nm.transformer, check_shapes=shapes)
    write_lora(dst, out, {"ufo_converted_from": f"{lora.format}:{Path(src).name}"}, exclusive=exclusive)
    return out, folded_modules(lora, out)


def folded_modules(before: LoraWeights, after: LoraWeights) -> int:
    """How many modules of a conversion came out with other up/down tensors (a scale folded in).
    `convert` keeps the modules' order and count, so they pair up in order."""
    pairs = zip(before.modules.values(), after.modules.values(), strict=True)
    return sum(1 for a, b in pairs if not (torch.equal(a.down, b.down) and torch.equal(a.up, b.up)))


# ---- combine ----------------------------------------------------------------------------------
@dataclass
class CombineResult:
    weights: LoraWeights
    max_rel_error: float = 0.0
    total_rel_error: float = 0.0
    reduced: int = 0
    notes: list[str] = field(default_factory=list)


def _reduce(mod: LoraModule, rank: int) -> tuple[LoraModule, float, float, float]:
    """Best rank-`rank` approximation of scale*up@down (SVD through QR of the thin factors, so
    the full out x in matrix is never decomposed). Returns the module (alpha = rank, scale 1),
    its relative Frobenius error, and the squared error and norm for the total."""
    up = (mod.up.float().flatten(1)) * mod.scale  # [out, k]
    down = mod.down.float().flatten(1)  # [k, in]
    q_up, r_up = torch.linalg.qr(up)
    q_down, r_down = torch.linalg.qr(down.T)
    u, s, vh = torch.linalg.svd(r_up @ r_down.T)
    keep = min(rank, s.numel())
    root = s[:keep].sqrt()
    new_up = (q_up @ u[:, :keep]) * root
    new_down = root[:, None] * (vh[:keep] @ q_down.T)
    err2, norm2 = float((s[keep:] ** 2).sum()), float((s**2).sum())
    rel = math.sqrt(err2 / norm2) if norm2 > 0 else 0.0
    new_down = new_down.reshape(keep, *mod.down.shape[1:])
    new_up = new_up.reshape(mod.up.shape[0], keep, *mod.up.shape[2:])
    return LoraModule(new_down, new_up, float(keep)), rel, err2, norm2


def combine_loras(
    specs: list[tuple[Path, float]],
    model: str | Path | None = None,
    rank: int | None = None,
    to: Format | None = None,
    dtype: torch.dtype = torch.float32,
) -> CombineResult:
    """One LoRA equal to applying each input at its weight: per module the factors are stacked,
    down = cat(down_i), up = cat(w_i * (alpha_i / r_i) * up_i) along the rank, alpha = new rank
    (scale 1). Exact; `rank` optionally truncates each module by SVD (error reported)."""
    if not specs:
        raise LoraError("combine needs at least one FILE[:WEIGHT]")
    loras = [(read_lora(p), w) for p, w in specs]
    nm = names_model(model, loras[0][0])
    parts: dict[str, list[tuple[LoraModule, float]]] = {}
    for lora, weight in loras:
        resolved = to_peft(lora, nm.adapter_cls, nm.transformer, check_shapes=model is not None)
        for path, mod in resolved.modules.items():
            parts.setdefault(path, []).append((mod, weight))
    modules: dict[str, LoraModule] = {}
    for path, items in sorted(parts.items()):
        down = torch.cat([m.down.float() for m, _ in items])
        up = torch.cat([m.up.float() * (w * m.scale) for m, w in items], dim=1)
        modules[path] = LoraModule(down, up, float(down.shape[0]))
    result = CombineResult(LoraWeights("peft", modules))
    if rank is not None:
        err2_sum = norm2_sum = 0.0
        for path, mod in list(modules.items()):
            if mod.rank <= rank:
                continue
            modules[path], rel, err2, norm2 = _reduce(mod, rank)
            result.reduced += 1
            result.max_rel_error = max(result.max_rel_error, rel)
            err2_sum, norm2_sum = err2_sum + err2, norm2_sum + norm2
        result.total_rel_error = math.sqrt(err2_sum / norm2_sum) if norm2_sum > 0 else 0.0
    modules = {k: LoraModule(m.down.to(dtype), m.up.to(dtype), m.alpha) for k, m in modules.items()}
    out = LoraWeights("peft", modules, metadata={"ufo_combined_from": json.dumps([[str(p), w] for p, w in specs])})
    fmt = to or loras[0][0].format
    result.weights = convert(out, fmt, nm.adapter_cls)
    return result


# ---- bake -------------------------------------------------------------------------------------
def bake_model(model_dir: str | Path, specs: list[tuple[Path, float]], out: str | Path) -> Path:
    """A model folder with the LoRAs merged into the transformer (fp32 merge, one cast to the
    stored dtype), the same layout, shards and tensor names as the input, every other component
    copied. Built in a temporary sibling folder and renamed into place when complete."""
    from safetensors.torch import save_file

    from ufo_video.lora.apply import fuse_loras, load_loras
    from ufo_video.models.registry import load_model
    from ufo_video.models.weights import find_weight_files, read_header_shapes

    model_dir, out = Path(model_dir), Path(out)
    taken = UfoError(f"{out} exists and is not empty; choose a new folder for the baked model")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise taken
    if not specs:
        raise LoraError("bake needs at least one --lora FILE[:WEIGHT]")
    check_lora_files([p for p, _ in specs])  # a broken file is named before the model loads
    files = find_weight_files(model_dir / "transformer")
    headers = read_header_shapes(files)
    dtypes = {d for _, d in headers.values()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in SAFETENSORS_DTYPES:
        raise UfoError(f"{model_dir / 'transformer'}: weights in {sorted(dtypes)}; bake supports one of F32/BF16/F16")
    dtype = SAFETENSORS_DTYPES[next(iter(dtypes))]
    model = load_model(model_dir, dtype=dtype, components=("transformer",))
    if model.info.layout not in ("diffusers", "original"):
        raise UfoError(
            f"{model_dir}: bake rewrites the transformer's own shards, and a {model.info.layout} transformer is not "
            "written here; apply the LoRA at generation time (--lora FILE:WEIGHT, or --fuse) instead"
        )
    load_loras(model, [(Path(p), float(w)) for p, w in specs])
    fuse_loras(model, keep_original=False)
    model.transformer.unload_lora()  # the merged weights are the base layers now
    rename = model.to_original_module_name if model.info.layout == "original" else (lambda k: k)
    state = {rename(k): v.contiguous() for k, v in model.transformer.state_dict().items()}
    if set(state) != set(headers):
        raise RuntimeError("baked tensor names differ from the input's; refusing to write")  # a bug, not user input

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for entry in model_dir.iterdir():
            if entry.name != "transformer":
                (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, tmp / entry.name)
        tdir = tmp / "transformer"
        tdir.mkdir()
        weight_names = {f.name for f in files}
        for entry in (model_dir / "transformer").iterdir():
            if entry.name not in weight_names:
                (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, tdir / entry.name)
        for f in files:
            with_keys = read_header_shapes([f])
            save_file({k: state[k] for k in with_keys}, str(tdir / f.name), metadata={"format": "pt"})
        record = {"base_model": str(model_dir), "loras": [[str(p), float(w)] for p, w in specs], "dtype": str(dtype)}
        (tmp / "ufo_bake.json").write_text(json.dumps(record, indent=2))
        fsync_tree(tmp)
        try:  # rename(2) replaces an empty folder, never a non-empty one: a bake that finished first is kept
            place_dir_exclusive(tmp, out)
        except OutputError:
            raise taken from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(out.parent)
    return out
