"""Strict, safetensors-only weight loading shared by every model family.

diffusers' and transformers' `from_pretrained` warn and randomly initialise any tensor they do
not find — for EasyAnimate's original layout that silently produces a broken model. Here a model
is built from its config on the meta device, the state dict is read from safetensors files only
(never pickles), optionally renamed, compared key by key and shape by shape with the model, and
only an exact match is accepted. Everything else is a `ModelLoadError` listing the offenders.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors import SafetensorError, safe_open
from torch import nn

from ufo_video.errors import ModelLoadError

WEIGHT_INDEX_SUFFIX = ".safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def find_weight_files(folder: Path) -> list[Path]:
    """The safetensors files of one component folder (single file or a sharded index)."""
    if not folder.is_dir():
        raise ModelLoadError(f"missing folder: {folder}")
    indexes = sorted(folder.glob(f"*{WEIGHT_INDEX_SUFFIX}"))
    if indexes:
        index_path = indexes[0]
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise ModelLoadError(f"{index_path}: not a valid safetensors index ({exc})") from None
        files = sorted({folder / name for name in weight_map.values()})
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ModelLoadError(f"{index_path} lists shards that are missing: {', '.join(missing)}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelLoadError(
            f"{folder}: only pickle weights found ({', '.join(pickles)}); ufo-video loads safetensors only "
            "because pickles can run code. Convert them to .safetensors first."
        )
    raise ModelLoadError(f"{folder}: no .safetensors weight file found")


def read_header_shapes(files: Iterable[Path]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor name -> (shape, dtype) from safetensors headers only (no tensor data is read)."""
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    sl = handle.get_slice(key)
                    shapes[key] = (tuple(sl.get_shape()), str(sl.get_dtype()))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(f"{path}: unreadable safetensors file ({exc}); re-download or re-save it") from None
    return shapes


def read_state_dict(files: Iterable[Path]) -> dict[str, torch.Tensor]:
    """Read every tensor of the given safetensors files onto the CPU."""
    state: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    state[key] = handle.get_tensor(key)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{path}: unreadable safetensors file ({exc}); re-download or re-save it") from None
    return state


def _limited(items: list[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def compare_keys(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], where: str
) -> None:
    """Raise a `ModelLoadError` listing missing, unexpected and mis-shaped tensors."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(
        f"{k} (file {list(found[k])}, model {list(expected[k])})"
        for k in set(expected) & set(found)
        if tuple(found[k]) != tuple(expected[k])
    )
    problems = []
    if missing:
        problems.append(f"missing tensors ({len(missing)}): {_limited(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors ({len(unexpected)}): {_limited(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {_limited(mismatched)}")
    if problems:
        raise ModelLoadError(
            f"{where}: the weights do not match the model config; refusing to load "
            "(missing tensors would be randomly initialised).\n  " + "\n  ".join(problems)
        )


def build_on_meta(factory: Callable[[], nn.Module]) -> nn.Module:
    """Instantiate a module without allocating its weights (for counting and strict loading)."""
    with init_empty_weights(include_buffers=False):
        return factory()


def expected_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_strict(
    factory: Callable[[], nn.Module],
    folder: Path,
    *,
    rename: Callable[[str], str] | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Build `factory()` on meta, then fill it from `folder`'s safetensors after an exact key check."""
    files = find_weight_files(folder)
    model = build_on_meta(factory)
    state = read_state_dict(files)
    if rename is not None:
        renamed: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            new = rename(key)
            if new in renamed:
                raise ModelLoadError(f"{folder}: two tensors map to '{new}' after renaming; the folder mixes layouts")
            renamed[new] = value
        state = renamed
    compare_keys(expected_shapes(model), {k: tuple(v.shape) for k, v in state.items()}, str(folder))
    if dtype is not None:
        state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise ModelLoadError(f"{folder}: tensors left uninitialised after loading: {_limited(leftover)}")
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
