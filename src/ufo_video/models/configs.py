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


def component_class_is(path: Path, component: str, class_name: str) -> bool:
    """True when `path/component/config.json` names `class_name` (a family's `detect`: configs only,
    a malformed config is "not mine" here and an error where it is read for real)."""
    cfg = Path(path) / component / "config.json"
    if not cfg.is_file():
        return False
    try:
        return read_json(cfg).get("_class_name") == class_name
    except ModelLoadError:
        return False


def read_model_index(path: Path, pipelines: tuple[str, ...] | set[str], what: str) -> dict[str, Any]:
    """`model_index.json` of a diffusers pipeline folder whose `_class_name` is one of `pipelines`;
    else an error naming the file and what was expected (`what`: e.g. "a Wan '-Diffusers' folder")."""
    index = read_json(Path(path) / "model_index.json")
    if index.get("_class_name") not in pipelines:
        raise ModelLoadError(
            f"{Path(path) / 'model_index.json'}: _class_name={index.get('_class_name')!r}; expected one of "
            f"{', '.join(sorted(pipelines))} ({what})"
        )
    return index
