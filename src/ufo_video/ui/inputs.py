"""What the page sends, checked: every bad value becomes a `gr.Error` that names its input.

Handlers raise `UfoError`; `user_errors` turns them into `gr.Error`, which the page shows in a red
box while the app keeps running. Tracebacks are for bugs only. The page's values are checked here,
by the field's label, before the shared code sees them; the shared code's own errors name
command-line flags (`--weights`, `--lora`, "command line"), so `user_errors` renames a leading flag
to the page's field (`PAGE_LABELS`).

Typed paths are confined to the folders the app was allowed (`confine`): whoever can open the page
must not read the server's other files through it (`ufo-video ui --allow-dir`).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ufo_video.errors import UfoError

MAX_LORAS = 6  # LoRA rows in the page (the CLI takes any number)
DEFAULT_WEIGHT = 0.15
MODES = ("t2v", "i2v")


# a command-line flag at the start of a shared-code error (or after the field that wraps it) -> the page's field
PAGE_LABELS = {"--weights": "weights", "--lora": "LoRA", "--blocks-to-swap": "blocks to swap",
               "command line": "overrides"}  # fmt: skip
_FLAG = re.compile(r"^((?:[\w ,]+: )?)(--weights|--lora|--blocks-to-swap|command line)\b")


def page_message(message: str) -> str:
    """`message` with a leading command-line flag renamed to the page's field label."""
    return _FLAG.sub(lambda m: m[1] + PAGE_LABELS[m[2]], message, count=1)


def user_errors(fn: Callable) -> Callable:
    """Run a handler; a `UfoError` becomes a visible `gr.Error` naming the page's field."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UfoError as exc:
            raise gr.Error(page_message(str(exc)), title="ufo-video", print_exception=False) from None

    return wrapper


def confine(path: Path, name: str, allowed: Sequence[Path] | None) -> Path:
    """`path` if it lies inside one of the `allowed` folders (None: no limit), else a UfoError
    naming the field and the flag that would allow it."""
    if allowed is None:
        return path
    real = path.expanduser().resolve()
    if any(real == a or a in real.parents for a in allowed):
        return path
    folder = real if real.is_dir() else real.parent
    raise UfoError(f"{name}: {path} is outside the folders this app may read ({', '.join(str(a) for a in allowed)}); "
                   f"start `ufo-video ui` with --allow-dir {folder} to allow it")  # fmt: skip


def number(value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None,
           integer: bool = False) -> float | int:  # fmt: skip
    """A finite number within bounds, or a UfoError naming the input."""
    if isinstance(value, str):
        value = value.strip()
    if value is None or value == "":
        # a number box that holds text sends nothing (the browser drops it): say what to type
        raise UfoError(f"{name}: empty or not a number; type a number")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UfoError(f"{name}: {value!r} is not a number") from None
    if not math.isfinite(x):
        raise UfoError(f"{name}: {value!r} is not a finite number")
    if minimum is not None and x < minimum:
        raise UfoError(f"{name}: {value!r} is below the minimum {minimum:g}")
    if maximum is not None and x > maximum:
        raise UfoError(f"{name}: {value!r} is above the maximum {maximum:g}")
    if integer:
        if x != int(x):
            raise UfoError(f"{name}: {value!r} must be a whole number")
        return int(x)
    return x


def existing_file(value: Any, name: str, suffixes: tuple[str, ...] = (), allowed: Sequence[Path] | None = None) -> Path:
    text = str(value or "").strip()
    if not text:
        raise UfoError(f"{name}: give a file path")
    path = confine(Path(text).expanduser(), name, allowed)
    if not path.is_file():
        raise UfoError(f"{name}: file not found: {path}")
    if suffixes and path.suffix.lower() not in suffixes:
        raise UfoError(f"{name}: {path.name} is not a {' / '.join(suffixes)} file")
    return path


def image_file(value: Any, name: str) -> str:
    """An image the browser uploaded (or a path): it must open as an image."""
    from PIL import Image, UnidentifiedImageError

    path = existing_file(value, name)
    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError) as exc:
        raise UfoError(f"{name}: {path.name} is not an image PNG/JPEG/WebP can read ({exc.__class__.__name__})") from None
    return str(path)


def lora_rows(values: list[Any], allowed: Sequence[Path] | None = None) -> list[tuple[Path, float]]:
    """[path1, weight1, path2, weight2, ..., more] from the LoRA rows (empty paths are unused
    rows) and the "more LoRAs" text: one `PATH:WEIGHT` (or `PATH`, at the default weight) per line."""
    rows, more = values[:-1], values[-1]
    out = []
    for i in range(0, len(rows), 2):
        path, weight = rows[i], rows[i + 1]
        if not str(path or "").strip():
            continue
        n = i // 2 + 1
        out.append((existing_file(path, f"LoRA {n}", (".safetensors",), allowed),
                    float(number(weight, f"LoRA {n} weight", minimum=0.0, maximum=2.0))))  # fmt: skip
    for k, line in enumerate(str(more or "").splitlines(), start=1):
        if not line.strip():
            continue
        text = line.strip()
        path, sep, tail = text.rpartition(":")
        if not sep or not path or Path(text).expanduser().is_file():
            path, tail = text, str(DEFAULT_WEIGHT)  # a path alone (it may hold a colon)
        name = f"more LoRAs, line {k}"
        out.append((existing_file(path, name, (".safetensors",), allowed), float(number(tail, f"{name} weight", minimum=0.0, maximum=2.0))))
    return out


def _named_preprocess(component: Any, convert: Callable[[Any], Any]) -> Any:
    """Replace one component's `preprocess` (on the instance: a subclass would make Gradio write a
    .pyi stub beside this file) so a bad value raises a `gr.Error` naming the component's label
    instead of Gradio's generic "could not preprocess input component at index N"."""
    import gradio as gr

    def preprocess(payload: Any) -> Any:
        try:
            return convert(payload)
        except gr.Error:
            raise
        except Exception as exc:  # PIL and others raise several types for a bad file
            message = str(exc) if isinstance(exc, UfoError) else f"{component.label}: cannot be read ({exc.__class__.__name__})"
            raise gr.Error(message, title="ufo-video", print_exception=False) from None

    component.preprocess = preprocess
    return component


def number_box(label: str, value: float, minimum: float, maximum: float, step: float = 0.01, empty_ok: bool = False,
               **kwargs: Any):  # fmt: skip
    """A number field checked here: text or a value outside `minimum`-`maximum` is refused with an
    error naming the field. Not a slider: a slider turns typed text into 0 and clamps 5 to its
    maximum in the browser, so the run would use a value nobody asked for. What is typed arrives as
    typed (text: nothing); `empty_ok`: an empty box passes as None, for the handler to judge."""
    import gradio as gr

    box = gr.Number(value=value, label=label, step=step, **kwargs)

    def convert(payload: Any) -> Any:
        if payload is None and empty_ok:
            return None
        return float(number(payload, label, minimum=minimum, maximum=maximum))

    return _named_preprocess(box, convert)


def weight_box(label: str, value: float = DEFAULT_WEIGHT, **kwargs: Any):
    """A LoRA weight box, 0-2 (UFO's useful range is 0.05-0.2; default 0.15); an empty box passes
    as None, refused by the handler where the row is used (an unused row may stay empty)."""
    return number_box(label, value, 0.0, 2.0, empty_ok=True, **kwargs)


def image_input(label: str, **kwargs: Any):
    """An image upload (kept as a file path) whose unreadable uploads (a text file named .png)
    are reported by `label`."""
    import gradio as gr

    image = gr.Image(type="filepath", label=label, sources=["upload"], **kwargs)
    original = image.preprocess

    def convert(payload: Any) -> Any:
        try:
            return original(payload)
        except Exception as exc:
            name = payload.get("orig_name") if isinstance(payload, dict) else getattr(payload, "orig_name", None)
            raise UfoError(f"{label}: {name or 'the file'} is not an image that can be read ({exc.__class__.__name__}); "
                           "upload a PNG, JPEG or WebP") from None

    return _named_preprocess(image, convert)
