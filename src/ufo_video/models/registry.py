"""Model families known to ufo-video. A new family is one adapter module plus one line here."""

from __future__ import annotations

from pathlib import Path

from ufo_video.errors import ModelLoadError
from ufo_video.models.base import ModelAdapter
from ufo_video.models.easyanimate import EasyAnimateAdapter

ADAPTERS: dict[str, type[ModelAdapter]] = {
    EasyAnimateAdapter.family: EasyAnimateAdapter,
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
