"""Training from the latent cache with the pipeline's start-image noise (train.start_image_noise=model).

The tiny InP model sets add_noise_in_inpaint_model, so its pipeline noises the given frames; the
cache then stores the clean first/last frames and every step noises and VAE-encodes them afresh.
The masks are restricted to the kinds the cache holds (all / first / first+last: the i2v-type
ones), so the encoding run and the cached run draw the same kinds and can be compared exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from test_train_helpers import losses, lora, make_dataset, max_diff, write_config
from ufo_video.cli import main
from ufo_video.config import load_config
from ufo_video.models.easyanimate import cache as easyanimate_cache, masks as easyanimate_masks
from ufo_video.models.easyanimate import EasyAnimateAdapter
from ufo_video.models.registry import model_shell
from ufo_video.train.setup import needed_components

CACHED_KINDS = tuple((k, p) for k, p in easyanimate_masks.MASK_KINDS if k in easyanimate_masks.CACHED_MASK_KINDS)


@pytest.fixture
def cached_kinds_only(monkeypatch):
    """The encoding run draws among the cached kinds only (box/span need a whole clip of pixels)."""
    monkeypatch.setattr(easyanimate_masks, "MASK_KINDS", CACHED_KINDS)


def _record_kinds(monkeypatch) -> list[str]:
    """Mask kinds drawn by the cached run's rebuilds of the noisy conditioning."""
    kinds, real = [], easyanimate_cache.noisy_conditioning

    def noisy_conditioning(*args, **kw):
        cond, drawn = real(*args, **kw)
        kinds.extend(drawn)
        return cond, drawn

    monkeypatch.setattr(easyanimate_cache, "noisy_conditioning", noisy_conditioning)
    return kinds


def test_cached_training_with_start_image_noise_equals_encoding_every_step(tiny_model, tmp_path, capsys,
                                                                           cached_kinds_only, monkeypatch):
    data = make_dataset(tmp_path / "data", images=3, videos=1)
    plain = write_config(tmp_path / "plain.toml", tiny_model, data, tmp_path / "plain", save_state=False)
    assert load_config(plain).train.start_image_noise == "model"  # the default
    assert main(["train", str(plain)]) == 0
    cached = write_config(tmp_path / "cached.toml", tiny_model, data, tmp_path / "cached", save_state=False)
    args = [f"data.cache_dir={tmp_path / 'cache'}", "data.cache_latents=true"]
    assert needed_components(load_config(cached, args), model_shell(load_config(cached, args).model.pretrained_model_name_or_path)) == ("transformer", "scheduler", "vae")
    assert main(["data", "cache", str(cached), *args]) == 0
    capsys.readouterr()
    kinds = _record_kinds(monkeypatch)
    assert main(["train", str(cached), *args]) == 0
    out = capsys.readouterr().out
    assert "latent cache: also loading the vae" in out and "text encoders stay unloaded" in out
    assert {"first", "first_last"} & set(kinds), kinds  # some steps really rebuilt a noisy given frame
    assert losses(tmp_path / "plain") == losses(tmp_path / "cached")
    last = "checkpoint-4.safetensors"
    assert max_diff(lora(tmp_path / "plain" / last), lora(tmp_path / "cached" / last)) == 0.0


def test_cached_start_image_noise_is_drawn_afresh_every_step(tiny_model, tmp_path, monkeypatch):
    """One image, batch 1, first-frame masks only: each step (a new epoch) gives the transformer
    different inpaint latents for the same clip: the mask channel is the same, the encoded noisy
    first frame is not, and none equals the clean first frame's latents."""
    monkeypatch.setattr(easyanimate_masks, "MASK_KINDS", (("first", 1.0),))
    data = make_dataset(tmp_path / "data", images=1, videos=0)
    cfg = write_config(tmp_path / "c.toml", tiny_model, data, tmp_path / "out", save_state=False,
                       train_batch_size=1, max_train_steps=3, checkpointing_steps=3)
    args = [f"data.cache_dir={tmp_path / 'cache'}", "data.cache_latents=true"]
    assert main(["data", "cache", str(cfg), *args]) == 0
    seen, real = [], EasyAnimateAdapter.predict

    def predict(self, noisy, timesteps, text, conditioning=None):
        seen.append(conditioning["inpaint_latents"].detach().clone())
        return real(self, noisy, timesteps, text, conditioning)

    monkeypatch.setattr(EasyAnimateAdapter, "predict", predict)
    assert main(["train", str(cfg), *args]) == 0
    assert len(seen) == 3
    clean = _clean_first_frame_conditioning(tiny_model, tmp_path / "cache")
    for i, a in enumerate(seen):
        assert torch.equal(a[:, :1], clean[:, :1])  # the mask channel
        assert not torch.equal(a, clean)
        for b in seen[i + 1:]:
            assert torch.equal(a[:, :1], b[:, :1]) and not torch.equal(a[:, 1:], b[:, 1:])
    # the noise is the pipeline's small one (sigma ~ exp(N(-3, 0.5))), not a different clip
    gaps = [float((a - clean).abs().max()) for a in seen]
    assert all(0 < g < float(clean.abs().max()) for g in gaps), gaps


def _clean_first_frame_conditioning(model_dir: Path, cache_dir: Path) -> torch.Tensor:
    """The first-frame inpaint latents without noise, from the cached clean frames."""
    from ufo_video.data.cache_store import CacheStore
    from ufo_video.models.registry import load_model

    store = CacheStore(cache_dir, writable=False)
    [key] = [k for k in store.items if k.endswith("." + easyanimate_cache.PIXELS_ITEM)]
    given = store.get(key)[None]
    model = load_model(model_dir, dtype=torch.float32, components=("vae",))
    frames = 5
    pixels = easyanimate_cache.clip_from_given(given, frames)
    mask = easyanimate_masks.fixed_mask("first", frames, *given.shape[-2:])[None]
    with torch.no_grad():
        return model.inpaint_conditioning(pixels, mask)


def test_a_cache_without_the_given_frames_is_refused_then_completed(tiny_model, tmp_path, capsys):
    """A cache built for start_image_noise=off lacks the clean given frames: training with the
    noise stops before step 1 naming the missing item and the command; `data cache` then adds
    them (the clips' latents already cached are kept) and training runs."""
    data = make_dataset(tmp_path / "data", images=3, videos=1)
    cfg = write_config(tmp_path / "c.toml", tiny_model, data, tmp_path / "out", save_state=False)
    args = [f"data.cache_dir={tmp_path / 'cache'}", "data.cache_latents=true"]
    assert main(["data", "cache", str(cfg), *args, "train.start_image_noise=off"]) == 0
    capsys.readouterr()
    assert main(["train", str(cfg), *args]) == 2
    err = capsys.readouterr().err
    assert easyanimate_cache.PIXELS_ITEM in err and "train.start_image_noise" in err
    assert "ufo-video data cache" in err
    assert not (tmp_path / "out" / "losses.jsonl").exists()
    assert main(["data", "cache", str(cfg), *args]) == 0
    encoded = re.search(r"clips: (\d+) used, (\d+) encoded now", capsys.readouterr().out)
    assert encoded and int(encoded[2]) == int(encoded[1]) > 0  # every clip gained its given frames
    assert main(["train", str(cfg), *args]) == 0
    assert [s for s, _ in losses(tmp_path / "out")] == [1, 2, 3, 4]
