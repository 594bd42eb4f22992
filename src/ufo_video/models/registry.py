"""Model families known to ufo-video. A new family is one package (`models/<family>/`) plus one line here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ufo_video.errors import ModelLoadError
from ufo_video.models.base import ModelAdapter
from ufo_video.models.easyanimate import EasyAnimateAdapter
from ufo_video.models.ltx2.adapter import LTX2Adapter
from ufo_video.models.wan import WanAdapter

ADAPTERS: dict[str, type[ModelAdapter]] = {
    EasyAnimateAdapter.family: EasyAnimateAdapter,
    WanAdapter.family: WanAdapter,
    LTX2Adapter.family: LTX2Adapter,
}


def folder_signature(path: Path) -> tuple:
    """Names, sizes and mtimes of a folder's entries and of its subfolders' entries: what changes
    when a config or a weight file is replaced, added or removed (a few dozen `stat` calls)."""
    out = []
    for entry in sorted(path.iterdir()):
        st = entry.stat()
        out.append((entry.name, st.st_size, st.st_mtime_ns))
        if entry.is_dir():
            out.extend((f"{entry.name}/{sub.name}", s.st_size, s.st_mtime_ns)
                       for sub in sorted(entry.iterdir()) for s in (sub.stat(),))  # fmt: skip
    return tuple(out)


# (resolved folder, folder_signature) -> [adapter class, ModelInfo or None]: a run's stages (loader,
# cache, setup, validation, every epoch) ask about the same folder many times; while its files are
# unchanged it is detected and inspected once per process
_SEEN: dict[tuple, list] = {}


def _entry(path: Path) -> list:
    if not path.exists():
        raise ModelLoadError(
            f"model folder not found: {path}. Put the model there (see README's guide for each "
            "family's folders) or make a tiny one with `ufo-video model make-tiny DIR`."
        )
    try:
        key = (str(path.resolve()), folder_signature(path) if path.is_dir() else ())
    except OSError:  # an unreadable entry: no memo; detection and loading name the problem
        return [_detect(path), None]
    if key not in _SEEN:
        if len(_SEEN) > 64:  # a long-lived process (the UI, tests) that saw many folders
            _SEEN.clear()
        _SEEN[key] = [_detect(path), None]
    return _SEEN[key]


def _detect(path: Path) -> type[ModelAdapter]:
    for adapter in ADAPTERS.values():
        if adapter.detect(path):
            return adapter
    raise ModelLoadError(
        f"{path}: not a model folder of a known family; expected one of: "
        + "; ".join(f"{name}: {cls.describe_folder()}" for name, cls in ADAPTERS.items())
    )


def adapter_for(path: str | Path) -> type[ModelAdapter]:
    """The adapter class whose `detect` accepts the folder; a clear error when none does."""
    return _entry(Path(path))[0]


def inspected(path: str | Path) -> tuple[type[ModelAdapter], Any]:
    """The folder's adapter class and its `ModelInfo` (configs only; see `_SEEN`)."""
    entry = _entry(Path(path))
    if entry[1] is None:
        entry[1] = entry[0].inspect(Path(path))
    return entry[0], entry[1]


def model_shell(path: str | Path) -> ModelAdapter:
    """An adapter instance with no components loaded: its rules, tasks and conditioning items
    from the folder's configs alone (cheap: reads no weights)."""
    cls, info = inspected(path)
    return cls(info, {})


def load_model(model: str | Path | ModelAdapter, **kwargs) -> ModelAdapter:
    """Load a model strictly (see `ModelAdapter.load`). `model` is a folder (detected and inspected
    here) or, as a run passes it, the shell it inspected once (`model_shell`): then nothing about
    the folder is read again before its weights."""
    if not isinstance(model, ModelAdapter):
        model = model_shell(model)
    return type(model).load(model.info.path, info=model.info, **kwargs)


def make_tiny_model(family: str, path: str | Path, *, layout: str | None, variant: str | None, seed: int = 0) -> tuple[Path, str]:
    """A tiny random model folder of `family` (its adapter module's own builder); returns the folder
    and a description. Unknown family / layout / variant names are errors naming the choices."""
    from ufo_video.errors import UfoError

    if family not in ADAPTERS:
        raise UfoError(f"unknown model family {family!r}; families: {', '.join(ADAPTERS)}")
    choices = ADAPTERS[family].tiny_choices()
    layout = layout or choices["layout"][0]
    variant = variant or choices["variant"][0]
    for name, value in (("layout", layout), ("variant", variant)):
        if value not in choices[name]:
            raise UfoError(f"--{name} {value!r} is not a {family} {name}; choose one of: {', '.join(choices[name])}")
    from ufo_video.models.quiet_deepspeed import import_deepspeed_quietly

    import_deepspeed_quietly()  # the writers' save_pretrained imports it; its CPU notice is noise here
    out = ADAPTERS[family].make_tiny(Path(path), layout=layout, variant=variant, seed=seed)
    return out, f"{ADAPTERS[family].display_name} {variant} model ({layout} layout)"
