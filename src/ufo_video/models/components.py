"""Loading the components every family shares the machinery of: transformers models (text and
image encoders) refusing what transformers would silently initialise, tokenizers, image
processors, and the check that a folder holds weights at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ufo_video.errors import ModelLoadError
from ufo_video.models.weights import find_weight_files


def load_transformers_strict(folder: Path, model_cls: Any, dtype: torch.dtype, what: str) -> nn.Module:
    """`model_cls.from_pretrained(folder)` (transformers knows its checkpoints' key conventions),
    refusing any missing or mis-shaped tensor that transformers would otherwise initialise
    randomly; safetensors only."""
    find_weight_files(folder)  # safetensors only, clear message otherwise
    try:
        model, info = model_cls.from_pretrained(str(folder), dtype=dtype, output_loading_info=True, use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder}: cannot load the {what} ({exc})") from None
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
    if problems:
        details = "; ".join(f"{k}: {', '.join(map(str, sorted(v)[:20]))}" for k, v in problems.items())
        raise ModelLoadError(f"{folder}: {what} weights do not match its config ({details})")
    return model.eval()


def load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    if not folder.is_dir():
        raise ModelLoadError(f"missing folder: {folder}")
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder}: cannot load the tokenizer ({exc})") from None


def load_image_processor(folder: Path) -> Any:
    from transformers import AutoImageProcessor

    if not folder.is_dir():
        raise ModelLoadError(f"missing folder: {folder}")
    try:
        return AutoImageProcessor.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder}: cannot load the image processor ({exc})") from None


def folder_has_weights(path: Path, components: tuple[str, ...]) -> bool:
    """False for a configs-only folder (no weight file in any of `components`); a folder with some
    components' weights but not others' is an error naming the component."""
    present = {c: any((path / c).glob("*.safetensors")) for c in components}
    if not any(present.values()):
        return False
    for comp in present:
        find_weight_files(path / comp)  # names the component and what is wrong with it
    return True
