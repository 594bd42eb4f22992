"""LoRA files: reading, checking, name resolution, conversion between formats, atomic writing.

Four key layouts are read and written (never pickles); a model family says which it uses
(`ModelAdapter.lora_formats`, `default_lora_format`):

* kohya (what the UFO reference and its base model's tools write and load):
  `lora_unet__<module path with '.' -> '_'>.lora_down.weight` (= PEFT lora_A, [r, in]),
  `.lora_up.weight` (= lora_B, [out, r]) and `.alpha` (0-d; scale = alpha / r). Paths use the
  family's ORIGINAL module names (the adapter's `to_original_module_name`). A module
  without an `.alpha` tensor gets alpha = rank (scale 1), kohya's own default.
* musubi (musubi-tuner's LoRAs): the same with the single-underscore prefix `lora_unet_`.
* comfy (what ComfyUI loads natively and diffusion-pipe writes):
  `diffusion_model.<original dotted path>.lora_A.weight` / `.lora_B.weight` (or
  `.lora_down` / `.lora_up`), optional `.alpha`.
* PEFT/diffusers: `transformer.<module path>.lora_A.weight` / `.lora_B.weight` (prefix
  `transformer.` optional), our (diffusers) module names. Alpha comes from diffusers'
  `lora_adapter_metadata` (keys `lora_alpha` / `alpha_pattern`, optionally prefixed
  `transformer.`); without it alpha = rank (scale 1), the rule diffusers applies to PEFT files
  that carry no alpha.

A family may add a file format of its own (`ModelAdapter.lora_file_formats`) that spells names as
one of these and stores the modules its way (e.g. alpha folded into lora_B, no alpha keys). Its
files read back as that format when their metadata records it (`ufo_format`, written by
`write_lora`) and their keys are exactly what it writes; otherwise as the generic format.

Underscore names are ambiguous (`txt_ff_net_0_proj`), so kohya names are resolved ONLY through a
lookup built from the real module names of a model (`name.replace('.', '_') -> name`), never by
splitting.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ufo_video.atomic import save_safetensors_atomic
from ufo_video.errors import LoraError, UfoError
from ufo_video.lora.weights import FLAT_FORMATS, Format, LoraModule, LoraWeights, Resolution, group_targets, limited

__all__ = [
    "FORMATS", "Format", "LoraModule", "LoraWeights", "Resolution", "atomic_save_safetensors", "convert",
    "check_lora_files", "group_targets", "lora_from_adapter", "read_lora", "save_lora", "to_kohya", "to_peft", "write_lora",
]  # fmt: skip
FORMATS = ("kohya", "musubi", "comfy", "peft")

KOHYA_PREFIX = "lora_unet_"
#: what each flat format writes in front of a name (kohya: `lora_unet_` + `_` + name, as EasyAnimate)
FLAT_PREFIXES = {"kohya": "lora_unet__", "musubi": "lora_unet_"}
COMFY_PREFIX = "diffusion_model."
KOHYA_SUFFIXES = {".lora_down.weight": "down", ".lora_up.weight": "up", ".alpha": "alpha"}
PEFT_SUFFIXES = {".lora_A.weight": "down", ".lora_B.weight": "up"}
COMFY_SUFFIXES = {**PEFT_SUFFIXES, **KOHYA_SUFFIXES}
PEFT_PREFIXES = ("transformer.", "base_model.model.")
DIFFUSERS_METADATA_KEY = "lora_adapter_metadata"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


# ---- reading ----------------------------------------------------------------------------------
def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise LoraError(f"LoRA file not found: {path}")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise LoraError(
            f"{path}: pickle files ({path.suffix}) are refused because loading them can run code; "
            "convert the LoRA to .safetensors with the tool that made it"
        )
    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            for key in handle.keys():
                tensors[key] = handle.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        with path.open("rb") as fh:
            head = fh.read(4)
        # torch.save writes a zip ("PK\x03\x04") or a raw pickle (0x80, protocol 2..5); sniffed
        # only after safetensors refused the file, so a valid header length never trips it
        if head.startswith(b"PK\x03\x04") or (len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5):
            raise LoraError(
                f"{path}: this is a pickle (torch.save) file despite its name; refused because "
                "loading pickles can run code. Convert it to safetensors with the tool that made it"
            ) from None
        raise LoraError(f"{path}: not a readable safetensors file ({exc}); it may be truncated or corrupt") from None
    if not tensors:
        raise LoraError(f"{path}: the file holds no tensors")
    return tensors, metadata


def file_expert(path: Path) -> str | None:
    """The expert a LoRA file names in its metadata (`ufo_expert`, written by a multi-expert
    training run), or None; reads the header only."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return (handle.metadata() or {}).get("ufo_expert") or None
    except (SafetensorError, OSError) as exc:
        raise LoraError(f"{path}: not a readable .safetensors LoRA file ({exc})") from None


def _split(key: str, suffixes: dict[str, str]) -> tuple[str, str] | None:
    for suffix, part in suffixes.items():
        if key.endswith(suffix):
            return key[: -len(suffix)], part
    return None


def _diffusers_alpha_metadata(metadata: dict[str, str], source: str) -> tuple[float | None, dict[str, float]]:
    raw = metadata.get(DIFFUSERS_METADATA_KEY)
    if not raw:
        return None, {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        raise LoraError(f"{source}: metadata '{DIFFUSERS_METADATA_KEY}' is not valid JSON") from None
    data = {k.removeprefix("transformer."): v for k, v in data.items()}
    alpha = data.get("lora_alpha")
    pattern = {k: float(v) for k, v in (data.get("alpha_pattern") or {}).items()}
    return (float(alpha) if alpha is not None else None), pattern


def _pattern_alpha(pattern: dict[str, float], name: str, default: float) -> float:
    """PEFT's `alpha_pattern` rule: an exact path, else the first key matching as a regex on a
    dotted suffix of the path (`(.*\\.)?(key)$`)."""
    import re

    if name in pattern:
        return pattern[name]
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def _classify(key: str) -> tuple[str, str, str] | None:
    """(format, module name as the format spells it, part) of one key, or None when unknown."""
    if key.startswith(KOHYA_PREFIX):
        parts = _split(key[len(KOHYA_PREFIX):], KOHYA_SUFFIXES)
        if parts is None:
            return None
        name = parts[0]
        return ("kohya", name[1:], parts[1]) if name.startswith("_") else ("musubi", name, parts[1])
    if key.startswith(COMFY_PREFIX):
        parts = _split(key[len(COMFY_PREFIX):], COMFY_SUFFIXES)
        return None if parts is None else ("comfy", parts[0], parts[1])
    parts = _split(key, PEFT_SUFFIXES)
    if parts is None:
        return None
    name = parts[0]
    for prefix in PEFT_PREFIXES:
        name = name.removeprefix(prefix)
    return "peft", name, parts[1]


def read_lora(path: str | Path, allow_nonfinite: bool = False) -> LoraWeights:
    """Read a kohya or PEFT LoRA from a safetensors file, refusing anything else.

    Refused with a `LoraError`: pickles (never unpickled), unreadable/truncated files, keys of
    neither layout, files mixing both, modules lacking their down or up tensor, down/up ranks
    that disagree, and (unless `allow_nonfinite`, which `lora inspect` uses to list them) NaN or
    infinite values or alphas: every command that applies, merges or rewrites a LoRA refuses
    them here, naming the file, instead of producing NaN frames after a whole run.
    """
    path = Path(path)
    tensors, metadata = _load_safetensors(path)
    found: dict[str, dict[str, tuple[str, str]]] = {}
    unknown = []
    for key in tensors:
        fmt_parts = _classify(key)
        if fmt_parts is None:
            unknown.append(key)
        else:
            found.setdefault(fmt_parts[0], {})[key] = fmt_parts[1:]
    if unknown:
        hint = " (text-encoder LoRAs are not supported)" if any(k.startswith("lora_te") for k in unknown) else ""
        raise LoraError(
            f"{path}: keys of an unknown layout{hint}: {limited(sorted(unknown))}. Expected kohya "
            "'lora_unet__<module>.lora_down.weight/.lora_up.weight/.alpha', musubi 'lora_unet_<module>...', "
            "ComfyUI 'diffusion_model.<module>.lora_A.weight/.lora_B.weight' or PEFT "
            "'transformer.<module>.lora_A.weight/.lora_B.weight'"
        )
    if len(found) > 1:
        shown = ", ".join(f"{f} ({next(iter(keys))})" for f, keys in found.items())
        raise LoraError(f"{path}: the file mixes key layouts: {shown}; a LoRA file must use one layout")
    fmt: Format = next(iter(found))  # type: ignore[assignment]
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, (name, part) in found[fmt].items():
        parts.setdefault(name, {})[part] = tensors[key]
    default_alpha, alpha_pattern = _diffusers_alpha_metadata(metadata, str(path)) if fmt == "peft" else (None, {})
    modules: dict[str, LoraModule] = {}
    incomplete, bad_rank = [], []
    for name, got in sorted(parts.items()):
        if "down" not in got or "up" not in got:
            incomplete.append(f"{name} (has {', '.join(sorted(got))})")
            continue
        down, up = got["down"], got["up"]
        if down.dim() < 2 or up.dim() < 2 or down.shape[0] != up.shape[1]:
            bad_rank.append(f"{name}: down {list(down.shape)} up {list(up.shape)}")
            continue
        rank = int(down.shape[0])
        if fmt != "peft":
            alpha = float(got["alpha"].item()) if "alpha" in got else float(rank)
        else:
            alpha = _pattern_alpha(alpha_pattern, name, default_alpha if default_alpha is not None else float(rank))
        modules[name] = LoraModule(down=down, up=up, alpha=alpha)
    if incomplete or bad_rank:
        raise LoraError(
            f"{path}: malformed LoRA: "
            + "; ".join(
                s for s in (
                    f"modules missing down/up ({len(incomplete)}): {limited(incomplete)}" if incomplete else "",
                    f"down/up ranks disagree: {limited(bad_rank)}" if bad_rank else "",
                ) if s
            )  # fmt: skip
        )
    family = _recorded_family_format(fmt, metadata, set(tensors), modules)
    weights = LoraWeights(format=family.name if family is not None else fmt, modules=modules, metadata=metadata,
                          source=str(path), family_format=family)  # fmt: skip
    bad = [] if allow_nonfinite else weights.nonfinite()
    if bad:
        more = f", ... ({len(bad) - 3} more)" if len(bad) > 3 else ""
        raise LoraError(
            f"{path}: NaN or infinite values in {len(bad)} LoRA tensors/alphas ({'; '.join(bad[:3])}{more}); the file "
            f"is broken (a training that diverged?): use an earlier checkpoint (`ufo-video lora inspect {path}` lists them)"
        )
    return weights


def _recorded_family_format(fmt: str, metadata: dict[str, str], keys: set[str], modules: dict[str, LoraModule]):
    """The family file format (`ModelAdapter.lora_file_formats`) a file is, or None: the one its
    metadata names (`ufo_format`, which `write_lora` records) when the file is exactly what that
    format writes (it reads as the format's `reads_as` and `tensors` spells the same keys). A file
    without that record, or one that does not match it, reads as its generic format: the keys alone
    cannot tell a family format from the generic one it spells names in."""
    name = metadata.get("ufo_format")
    if not name or name in FORMATS:
        return None
    from ufo_video.models.registry import ADAPTERS

    for cls in ADAPTERS.values():
        family = cls.lora_file_formats().get(name)
        if family is None or family.reads_as != fmt:
            continue
        try:
            spelled = set(family.tensors(modules))
        except UfoError:  # e.g. an alpha the format cannot store: not a file it wrote
            continue
        if spelled == keys:
            return family
    return None


def check_lora_files(paths: list[str | Path]) -> None:
    """Read every LoRA file in full (`read_lora`'s checks, non-finite values included) before a
    model is loaded, so a broken file costs no loading time and is named, not blamed on a dtype."""
    for path in paths:
        read_lora(path)


# ---- conversion -------------------------------------------------------------------------------
def _spell(fmt: str, adapter_cls: type, path: str) -> str:
    """A diffusers module path as `fmt` names it. Formats with the family's original names need
    a name that maps back to the same module; a module the original naming does not know would be
    written under a name no loader of that format applies, so it is refused by name."""
    if fmt == "peft":
        return path
    original = adapter_cls.to_original_module_name(path)
    try:
        back = adapter_cls.from_original_module_name(original)
    except UfoError:
        back = None
    if back != path:
        raise LoraError(
            f"module '{path}' has no name in the family's original naming, so a {fmt} file cannot name it; "
            "save this LoRA with format peft, or leave the module out of lora.target_modules"
        )
    return original.replace(".", "_") if fmt in FLAT_FORMATS else original


def convert(
    weights: LoraWeights, to: str, adapter, transformer: nn.Module | None = None, check_shapes: bool = True
) -> LoraWeights:
    """The same tensors under `to`'s names (not copied or cast: bit-exact). Names of a format
    other than PEFT are resolved through `transformer`'s real module names (never by splitting
    underscores); PEFT names convert to any format without a model."""
    adapter_cls = adapter if isinstance(adapter, type) else type(adapter)
    to = adapter_cls.lora_format_aliases().get(to, to)
    family_formats = adapter_cls.lora_file_formats()
    if to not in FORMATS and to not in family_formats:
        raise LoraError(f"unknown LoRA format {to!r}; formats: {', '.join((*FORMATS, *family_formats))}")
    if weights.format == to:
        return weights
    if to in family_formats:  # the generic format it spells names in, then the family's own storage
        fmt = family_formats[to]
        spelled = convert(weights, fmt.reads_as, adapter_cls, transformer, check_shapes)
        return replace(spelled, format=to, modules=fmt.fold(spelled.modules), family_format=fmt)
    if weights.format == "peft" and transformer is None:
        paths = dict(weights.modules)
    else:
        if transformer is None:
            raise LoraError(f"converting a {weights.format} LoRA needs the model's module names (give --model DIR)")
        resolved = weights.match(adapter_cls, transformer, check_shapes)
        if not resolved.ok:
            weights.resolve(adapter_cls, transformer, check_shapes)  # raises with the full list of problems
        paths = dict(resolved.modules)
    modules = {_spell(to, adapter_cls, p): m for p, m in paths.items()}
    return replace(weights, format=to, modules=modules, family_format=None)


def to_peft(weights: LoraWeights, adapter, transformer: nn.Module, check_shapes: bool = True) -> LoraWeights:
    """The same tensors under PEFT names (dotted diffusers paths)."""
    return convert(weights, "peft", adapter, transformer, check_shapes)


def to_kohya(
    weights: LoraWeights, adapter, transformer: nn.Module | None = None, check_shapes: bool = True
) -> LoraWeights:
    """The same tensors under kohya names (original module naming, '.' -> '_')."""
    if transformer is not None and weights.format == "peft":
        weights.resolve(adapter, transformer, check_shapes)  # check names (and shapes) first
    return convert(weights, "kohya", adapter, None if weights.format == "peft" else transformer, check_shapes)


# ---- writing ----------------------------------------------------------------------------------
def atomic_save_safetensors(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str], exclusive: bool = False
) -> Path:
    """A crash never leaves a half-written LoRA under the final name (see `ufo_video.atomic`);
    `exclusive`: an existing file (even one made meanwhile by another run) is never replaced."""
    return save_safetensors_atomic(path, tensors, metadata, exclusive=exclusive)


def write_lora(
    path: str | Path, weights: LoraWeights, metadata: dict[str, str] | None = None, dtype: torch.dtype | None = None,
    exclusive: bool = False,
) -> Path:
    """Write `weights` in its own format. `dtype` casts down/up/alpha (None keeps them as they are,
    which makes conversions bit-exact). Metadata: the file's own, then `metadata`, then the facts
    (format, rank, alpha, targets) that the tensors determine. `exclusive`: never replace a file."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise LoraError(f"{path}: LoRA files are written as .safetensors; use that extension")
    if not weights.modules:
        raise LoraError(f"{path}: nothing to write (the LoRA has no modules)")
    meta = dict(weights.metadata)
    meta.update(metadata or {})
    tensors: dict[str, torch.Tensor] = {}
    ranks, alphas = weights.ranks, weights.alphas
    rank = ranks.most_common(1)[0][0]
    alpha = alphas.most_common(1)[0][0]
    if weights.family_format is not None:
        tensors = weights.family_format.tensors(weights.modules, dtype)
    for name, mod in ({} if weights.family_format is not None else weights.modules).items():
        down, up = (mod.down, mod.up) if dtype is None else (mod.down.to(dtype), mod.up.to(dtype))
        if weights.format in FLAT_PREFIXES:
            base = f"{FLAT_PREFIXES[weights.format]}{name}"
            tensors[f"{base}.lora_down.weight"] = down
            tensors[f"{base}.lora_up.weight"] = up
            tensors[f"{base}.alpha"] = torch.tensor(mod.alpha, dtype=down.dtype)
        elif weights.format == "comfy":
            base = f"{COMFY_PREFIX}{name}"
            tensors[f"{base}.lora_A.weight"] = down
            tensors[f"{base}.lora_B.weight"] = up
            tensors[f"{base}.alpha"] = torch.tensor(mod.alpha, dtype=down.dtype)
        else:
            tensors[f"transformer.{name}.lora_A.weight"] = down
            tensors[f"transformer.{name}.lora_B.weight"] = up
    if weights.format == "peft":
        names = sorted(weights.modules)
        meta[DIFFUSERS_METADATA_KEY] = json.dumps(
            {
                "transformer.r": rank,
                "transformer.lora_alpha": alpha,
                "transformer.target_modules": names,
                "transformer.rank_pattern": {n: m.rank for n, m in weights.modules.items() if m.rank != rank},
                "transformer.alpha_pattern": {n: m.alpha for n, m in weights.modules.items() if m.alpha != alpha},
            },
            sort_keys=True,
        )
    meta.update(
        {
            "ufo_format": weights.format,
            "ufo_rank": str(rank) if len(ranks) == 1 else json.dumps(dict(ranks)),
            "ufo_alpha": f"{alpha:g}" if len(alphas) == 1 else json.dumps({str(k): v for k, v in alphas.items()}),
            "ufo_targets": json.dumps(group_targets(list(weights.modules))),
        }
    )
    return atomic_save_safetensors(tensors, path, meta, exclusive=exclusive)


def lora_from_adapter(model, adapter_name: str, tensors: dict[str, torch.Tensor] | None = None) -> LoraWeights:
    """The named PEFT adapter of `model.transformer` as PEFT-format `LoraWeights` (diffusers paths).
    `tensors` (parameter name -> whole tensor) replaces the module's own weights: a trainer whose
    weights are sharded across processes passes the gathered ones."""
    transformer = model.transformer
    config = (getattr(transformer, "peft_config", None) or {}).get(adapter_name)
    if config is None:
        raise LoraError(f"the transformer has no adapter named '{adapter_name}'")
    modules: dict[str, LoraModule] = {}
    for name, module in transformer.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if lora_a is None or adapter_name not in lora_a:
            continue
        down = lora_a[adapter_name].weight.detach()
        up = module.lora_B[adapter_name].weight.detach()
        if tensors is not None:
            prefix = f"{name}." if name else ""
            down = tensors[f"{prefix}lora_A.{adapter_name}.weight"]
            up = tensors[f"{prefix}lora_B.{adapter_name}.weight"]
        alpha = float(module.lora_alpha[adapter_name])
        modules[name] = LoraModule(down=down, up=up, alpha=alpha)
    if not modules:
        raise LoraError(f"adapter '{adapter_name}' wraps no module")
    return LoraWeights(format="peft", modules=modules)


def save_lora(
    path: str | Path,
    model,
    adapter_name: str,
    metadata: dict[str, str],
    dtype: torch.dtype = torch.float32,
    fmt: str | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Save the named adapter of `model.transformer` in the family's default format
    (`default_lora_format`: the format that family's own tools load), cast to `dtype`, written atomically. The metadata names the base model, its family and, for
    multi-expert models, the expert the LoRA is for (`ufo_expert`), which inference applies it to.
    `tensors`: whole trainable tensors by parameter name, for weights sharded across processes."""
    weights = convert(lora_from_adapter(model, adapter_name, tensors), fmt or type(model).default_lora_format, type(model))
    weights = replace(weights, modules={k: LoraModule(m.down.to("cpu"), m.up.to("cpu"), m.alpha) for k, m in weights.modules.items()})
    info = getattr(model, "info", None)
    meta = {str(k): str(v) for k, v in metadata.items()}
    if info is not None:
        meta.setdefault("ufo_base_model", str(info.path))
        meta.setdefault("ufo_base_family", info.family)
        experts = [e.component for e in model.experts()]
        if len(experts) > 1:
            others = [e for e in experts if e != "transformer" and e in model.extra_components]
            trained = next((e for e in others if model.extra_components[e] is model.transformer), "transformer")
            meta.setdefault("ufo_expert", trained)
    return write_lora(path, weights, meta, dtype=dtype)
