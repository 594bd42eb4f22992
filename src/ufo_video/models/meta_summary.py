"""What building the shipped configs' models on the meta device gives, stored so that commands
which only need those numbers and names start in a second instead of importing diffusers.

`model check --meta` on a configs-only folder needs parameter counts and block sizes; the LoRA
tools without `--model` need the module names of a family's bundled configs
(`ModelAdapter.names_model_path`). Both come from the real classes on the meta device; this file
keeps their results in `assets/meta-summaries.json`, keyed by a fingerprint of the folder's files.
A folder whose files differ from every stored entry (or that holds any weight file) is a miss and
goes the slow way, through diffusers, with the same result: the store is never consulted for a
folder it was not generated from.

Regenerate with `python -m ufo_video.models.meta_summary_build` after changing a shipped config, the
families' build code or the diffusers/transformers versions; tests/test_meta_summary.py rebuilds
every entry with diffusers and compares, so a stale store fails the suite instead of drifting.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).resolve().parents[1] / "assets"
STORE = ASSETS / "meta-summaries.json"
#: a folder holding any of these is not configs-only: its check reads headers through its adapter
WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".sft", ".pkl"})
#: files that cannot change what a config builds (the shipped folders' README.md)
IGNORED_SUFFIXES = frozenset({".md"})


#: a model folder is its files and its components' files; more than this is no shipped configs folder
MAX_FILES = 256


def _files(folder: Path) -> list[Path] | None:
    """The folder's files and its subfolders' files (a model folder's shape, as the registry reads
    it), or None when it is not a configs-only folder of that shape: a weight file, a deeper
    folder, or more than MAX_FILES entries (never a walk of a large tree)."""
    files: list[Path] = []
    for entry in folder.iterdir():
        inner = [entry] if entry.is_file() else list(entry.iterdir()) if entry.is_dir() else []
        for path in inner:
            if path.is_dir() or path.suffix in WEIGHT_SUFFIXES:
                return None
            files.append(path)
        if len(files) > MAX_FILES:
            return None
    return sorted(files)


def fingerprint(folder: str | Path) -> str | None:
    """sha256 over every file's relative path and bytes (docs aside); None for a missing folder or
    one that is no configs-only model folder (`_files`)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    try:
        files = _files(folder)
    except OSError:  # an unreadable entry: no stored answer; the classes' path names the problem
        return None
    if files is None:
        return None
    digest = hashlib.sha256()
    for path in files:
        if path.suffix in IGNORED_SUFFIXES:
            continue
        data = path.read_bytes()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


@lru_cache(maxsize=1)
def _by_fingerprint() -> dict[str, dict[str, Any]]:
    if not STORE.is_file():
        return {}
    entries = json.loads(STORE.read_text())["folders"]
    return {e["fingerprint"]: e for e in entries.values()}


def lookup(folder: str | Path) -> dict[str, Any] | None:
    """The stored entry built from a folder with exactly these files, or None (a miss)."""
    key = fingerprint(folder)
    return None if key is None else _by_fingerprint().get(key)


def cached_report(folder: str | Path) -> dict[str, Any] | None:
    """`CheckReport.to_dict()` of `model check --meta` on this folder, less its path; None on a miss."""
    entry = lookup(folder)
    return None if entry is None else entry["report"]


def cached_module_names(folder: str | Path, component: str = "transformer") -> list[str] | None:
    """`named_modules()` names (root left out) of the component built from this folder; None on a miss."""
    entry = lookup(folder)
    return None if entry is None else entry.get("module_names", {}).get(component)


def names_tree(names: list[str]) -> Any:
    """An `nn.Module` tree with exactly these module paths (empty modules): what name mapping
    reads of a transformer (`named_modules`), without its classes. Shapes are not there, so it
    serves only the names-only matching of the LoRA tools without --model."""
    from torch import nn

    root = nn.Module()
    for name in names:
        parent, _, leaf = name.rpartition(".")
        parent_module = root.get_submodule(parent) if parent else root
        parent_module.add_module(leaf, nn.Module())
    return root
