"""Strict, safetensors-only weight loading shared by every model family.

diffusers' and transformers' `from_pretrained` warn and randomly initialise any tensor they do
not find — for EasyAnimate's original layout that silently produces a broken model. Here a model
is built from its config on the meta device, the state dict is read from safetensors files only
(never pickles), optionally renamed, compared key by key and shape by shape with the model, and
only an exact match is accepted. Everything else is a `ModelLoadError` listing the offenders.

Names and shapes are compared from the files' headers before any tensor is read; then tensors
are streamed one by one (cast per tensor), so loading a component never holds it twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
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


def _header_sources(files: Iterable[Path], rename: Callable[[str], str] | None, folder: Path
                    ) -> dict[str, tuple[Path, str, tuple[int, ...]]]:
    """Model key -> (file, key in the file, shape), from the safetensors headers alone."""
    sources: dict[str, tuple[Path, str, tuple[int, ...]]] = {}
    for path in files:
        for key, (shape, _dtype) in read_header_shapes([path]).items():
            new = rename(key) if rename is not None else key
            if new in sources:
                raise ModelLoadError(f"{folder}: two tensors map to '{new}' after renaming; the folder mixes layouts")
            sources[new] = (path, key, shape)
    return sources


def stream_tensors(
    files: Iterable[Path],
    *,
    device: torch.device | str | None = None,
) -> Iterator[tuple[Path, str, torch.Tensor]]:
    """(file, key, tensor) for every tensor of `files`, one at a time.

    Read with safetensors' `pread` backend: each tensor is a fresh buffer of its own, so a tensor
    the caller drops (after casting it, or checking it) is freed at once. With the default mmap
    backend every tensor is a view of one mapping of the whole file, whose pages stay resident
    until the last tensor of the file is gone: a cast load then peaks at file + result.
    `device` (e.g. "cuda:0") lets safetensors place each tensor there directly.
    """
    dev = "cpu" if device is None else str(device)
    for path in files:
        try:
            with safe_open(str(path), framework="pt", device=dev, backend="pread") as handle:
                for key in handle.keys():
                    yield path, key, handle.get_tensor(key)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{path}: unreadable safetensors file ({exc}); re-download or re-save it") from None


def load_strict(
    factory: Callable[[], nn.Module],
    folder: Path,
    *,
    rename: Callable[[str], str] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Build `factory()` on meta, check names and shapes from the headers, then stream the tensors in.

    Host memory: every tensor is read, cast to `dtype` (floating tensors only) and, with
    `device`, placed there one at a time; the module's meta parameters are replaced in place
    (`load_state_dict(assign=True)`), so the peak is the component in its target dtype plus
    one tensor as stored, never the whole file twice (bench case `load_memory`).
    """
    files = find_weight_files(folder)
    model = build_on_meta(factory)
    sources = _header_sources(files, rename, folder)
    compare_keys(expected_shapes(model), {k: v[2] for k, v in sources.items()}, str(folder))
    names = {(path, key): new for new, (path, key, _) in sources.items()}
    state: dict[str, torch.Tensor] = {}
    for path, key, tensor in stream_tensors(files, device=device):
        if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
            tensor = tensor.to(dtype)
        state[names[(path, key)]] = tensor
    model.load_state_dict(state, strict=True, assign=True)
    del state
    if device is not None:
        model.to(device)  # buffers built with the module (e.g. rotary tables) follow the weights
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise ModelLoadError(f"{folder}: tensors left uninitialised after loading: {_limited(leftover)}")
    return model.eval()


def check_finite(files: Iterable[Path], where: str) -> int:
    """Read every floating tensor once (one at a time) and name those holding NaN or inf.

    Returns the number of tensors checked; raises `ModelLoadError` listing every non-finite one
    (a corrupt or half-written download). Memory: one tensor at a time.
    """
    bad: list[str] = []
    count = 0
    for path, key, tensor in stream_tensors(files):
        count += 1
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            nan = int(torch.isnan(tensor).sum())
            inf = int(torch.isinf(tensor).sum())
            bad.append(f"{key} in {path.name} ({nan} NaN, {inf} inf of {tensor.numel()})")
        del tensor
    if bad:
        raise ModelLoadError(
            f"{where}: {len(bad)} tensor(s) hold NaN or inf values (a corrupt download or a broken save); "
            f"re-download these files: {_limited(bad)}"
        )
    return count


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
