"""Model families known to ufo-video. A new family is one adapter module plus one line here."""

from __future__ import annotations

from pathlib import Path

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


def adapter_for(path: str | Path) -> type[ModelAdapter]:
    """The adapter class whose `detect` accepts the folder; a clear error when none does."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(
            f"model folder not found: {path}. Put the model there (see README's guide for each "
            "family's folders) or make a tiny one with `ufo-video model make-tiny DIR`."
        )
    for adapter in ADAPTERS.values():
        if adapter.detect(path):
            return adapter
    raise ModelLoadError(
        f"{path}: not a model folder of a known family; expected one of: "
        + "; ".join(f"{name}: {cls.describe_folder()}" for name, cls in ADAPTERS.items())
    )


def model_shell(path: str | Path) -> ModelAdapter:
    """An adapter instance with no components loaded: its rules, tasks and conditioning items
    from the folder's configs alone (cheap: reads no weights)."""
    cls = adapter_for(path)
    return cls(cls.inspect(Path(path)), {})


def load_model(path: str | Path, **kwargs) -> ModelAdapter:
    """Detect the family of `path` and load it strictly (see `ModelAdapter.load`)."""
    return adapter_for(path).load(Path(path), **kwargs)


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
    out = ADAPTERS[family].make_tiny(Path(path), layout=layout, variant=variant, seed=seed)
    return out, f"{ADAPTERS[family].display_name} {variant} model ({layout} layout)"
