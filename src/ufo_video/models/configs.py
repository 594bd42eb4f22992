"""Reading model config files: JSON objects with clear errors, and a class's own init keys."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from ufo_video.errors import ModelLoadError


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; a `ModelLoadError` naming the file when it is missing or malformed."""
    if not path.is_file():
        raise ModelLoadError(f"missing file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return data


def init_kwargs(config: dict[str, Any], cls: type) -> dict[str, Any]:
    """Keep only the keys `cls.__init__` accepts (configs carry `_class_name`, versions and, in
    original layouts, keys of their own)."""
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in config.items() if k in params and k != "self"}
