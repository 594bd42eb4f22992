"""Training from the latent/text cache: encoders not loaded, a missing cache explained. (Cached
equal to uncached, for every family: tests/contract.)"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from test_train_helpers import losses, make_dataset, write_config
from ufo_video.cli import main
from ufo_video.config import load_config
from ufo_video.models.registry import model_shell
from ufo_video.train.setup import needed_components


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data", images=3, videos=1)


def _record_components(monkeypatch) -> list[tuple[str, ...]]:
    """Every `components` tuple the trainer asks `load_model` for."""
    from ufo_video.models import registry

    asked, real = [], registry.load_model

    def load_model(path, *, components, **kw):
        asked.append(tuple(components))
        return real(path, components=components, **kw)

    monkeypatch.setattr(registry, "load_model", load_model)
    return asked


def test_cached_inpaint_training_without_start_image_noise_loads_no_vae(tiny_model, dataset, tmp_path, capsys,
                                                                          monkeypatch):
    """start_image_noise=off: the cache holds finished inpaint latents; training loads the
    transformer and scheduler only (no VAE, no text encoder) and says nothing about a VAE."""
    cfg_path = write_config(tmp_path / "c.toml", tiny_model, dataset, tmp_path / "out", save_state=False)
    cache_args = [f"data.cache_dir={tmp_path / 'cache'}", "data.cache_latents=true", "train.start_image_noise=off"]
    assert needed_components(load_config(cfg_path, cache_args), model_shell(load_config(cfg_path, cache_args).model.pretrained_model_name_or_path)) == ("transformer", "scheduler")
    assert main(["data", "cache", str(cfg_path), *cache_args]) == 0
    capsys.readouterr()
    asked = _record_components(monkeypatch)
    assert main(["train", str(cfg_path), *cache_args]) == 0
    assert asked == [("transformer", "scheduler")]
    assert "also loading" not in capsys.readouterr().out
    steps = losses(tmp_path / "out")
    assert [s for s, _ in steps] == [1, 2, 3, 4] and all(math.isfinite(v) for _, v in steps)


def test_training_from_a_missing_cache_says_what_to_run(tiny_model, dataset, tmp_path, capsys):
    cfg_path = write_config(tmp_path / "c.toml", tiny_model, dataset, tmp_path / "out")
    assert main(["train", str(cfg_path), f"data.cache_dir={tmp_path / 'none'}", "data.cache_latents=true"]) == 2
    assert "ufo-video data cache" in capsys.readouterr().err
