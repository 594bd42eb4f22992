"""Saving nested training state (optimizer, LR scheduler, RNG) without pickle.

Weights and states are read only from safetensors/JSON, never unpickled: a nested structure is
split into its tensors (one safetensors file, keyed by their path in the structure) and the rest
(a JSON file in which each tensor is replaced by ``{"__tensor__": key}``). Loading reverses it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ufo_video.atomic import fsync_file

TENSOR = "__tensor__"
TUPLE = "__tuple__"


def _split(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {TENSOR: path}
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"{path}: dict keys must be str or int")
        return {"__dict__": [[k, _split(v, f"{path}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {TUPLE: [_split(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"{path}: cannot store {type(obj).__name__} in a training state")


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if TENSOR in obj:
            return tensors[obj[TENSOR]]
        if TUPLE in obj:
            return tuple(_join(v, tensors) for v in obj[TUPLE])
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
        if "__dict__" in obj:
            return {k: _join(v, tensors) for k, v in obj["__dict__"]}
        raise ValueError(f"malformed state entry: {sorted(obj)}")
    return obj


def save_nested(obj: Any, folder: Path, name: str) -> None:
    """Write `name.json` (+ `name.safetensors` when there are tensors) into `folder`, fsynced."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split(obj, name, tensors)
    if tensors:
        save_file(tensors, str(folder / f"{name}.safetensors"))
        fsync_file(folder / f"{name}.safetensors")
    (folder / f"{name}.json").write_text(json.dumps(skeleton))
    fsync_file(folder / f"{name}.json")


def load_nested(folder: Path, name: str) -> Any:
    skeleton = json.loads((folder / f"{name}.json").read_text())
    tensor_file = folder / f"{name}.safetensors"
    tensors = load_file(str(tensor_file)) if tensor_file.is_file() else {}
    return _join(skeleton, tensors)


def rng_state() -> dict[str, Any]:
    """Every global RNG the trainer's process uses: python, numpy, torch CPU and each CUDA device."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
