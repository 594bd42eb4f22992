"""Latent / text-embedding cache: `ufo-video data cache` and `build_cached_loader`.

Checked against the uncached path: same batches as `build_train_loader` (order, refill of a
sample that fails to decode, text dropout, process split) and tensors bitwise equal to fresh
`encode_video` / `inpaint_conditioning` / `encode_text` calls on CPU; only changed files or
settings are re-encoded; a miss is a clear error.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_fixtures import write_image, write_meta, write_mp4

from ufo_video.cli import main
from ufo_video.config import build_config, config_to_toml
from ufo_video.data.cache import build_cached_loader, cache_dir_of
from ufo_video.models.easyanimate.masks import fixed_mask, select_conditioning
from ufo_video.data.cache_build import build_cache
from ufo_video.data.cache_store import CacheStore
from ufo_video.data.loader import build_train_loader
from ufo_video.errors import DataError

SEED = 3


def _dataset(root: Path, broken: bool = False) -> Path:
    """3 square images and 2 12-frame videos (32x32); ``broken``: a JPEG whose header probes fine
    but whose data is cut, so it fails at decode time and gets refilled."""
    records = []
    for i in range(6 if broken else 3):  # more images: a wrongly drawn replacement is likely to differ
        write_image(root / f"i{i}.png", size=(32, 32), color=(200, 60 * i, 0))
        records.append({"file_path": f"i{i}.png", "text": f"image {i}"})
    for i in range(2):
        write_mp4(root / f"v{i}.mp4", frames=12, size=(32, 32), moving=True)
        records.append({"file_path": f"v{i}.mp4", "text": f"video {i}"})
    if broken:
        noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(noise).save(root / "cut.jpg", quality=95)  # big pixel data behind a small header
        good = (root / "cut.jpg").read_bytes()
        (root / "cut.jpg").write_bytes(good[: len(good) * 2 // 3])
        records.append({"file_path": "cut.jpg", "text": "cut"})
    return write_meta(root / "meta.json", records)


def _cfg(model: Path, root: Path, meta: Path, batch: int = 2, **data):
    base = {"train_data_dir": str(root), "train_data_meta": str(meta), "image_sample_size": 32,
            "video_sample_size": 32, "token_sample_size": 32, "video_sample_n_frames": 5,
            "dataloader_num_workers": 0, "text_drop_ratio": 0.5, "max_failed_fraction": 0.5}  # fmt: skip
    base.update(data)
    return build_config({
        "model": {"pretrained_model_name_or_path": str(model), "weight_dtype": "fp32", "device": "cpu"},
        "data": base,
        # "off": the cache holds the finished inpaint latents these tests compare bitwise (with
        # "model" it keeps the clean given frames and training noises them: test_train_cache_noise.py)
        "train": {"train_batch_size": batch, "num_train_epochs": 1, "seed": SEED, "start_image_noise": "off"},
    })  # fmt: skip


def _cache(cfg, **kw):
    return build_cache(cfg, progress=False, **kw)


def test_cli_cache_then_batches_equal_the_uncached_path_bitwise(tiny_model: Path, tmp_path: Path, capsys) -> None:
    from ufo_video.models.registry import load_model
    from ufo_video.models.easyanimate.masks import make_mask

    data = tmp_path / "data"
    cfg = _cfg(tiny_model, data, _dataset(data, broken=True))
    config_file = tmp_path / "train.toml"
    config_file.write_text(config_to_toml(cfg))
    assert main(["data", "cache", str(config_file), "text_drop_ratio=0.5"]) == 0
    out = capsys.readouterr().out
    assert "8 encoded now" in out and "cut.jpg" in out  # 8 good clips; the cut one recorded as failed

    cached = list(build_cached_loader(cfg, seed=SEED, epoch=0))
    plain_loader = build_train_loader(cfg, seed=SEED, epoch=0)
    plain = list(plain_loader)
    assert len(plain_loader.failures) == plain_loader.decode_failures == 1  # failed at decode time, refilled
    assert [b["indices"] for b in cached] == [b["indices"] for b in plain]
    assert [b["texts"] for b in cached] == [b["texts"] for b in plain]
    assert "" in {t for b in plain for t in b["texts"]}  # dropout exercised
    assert all(torch.equal(c["is_static"], p["is_static"]) for c, p in zip(cached, plain))

    model = load_model(tiny_model, components=("vae", "text_encoder", "tokenizer"))
    with torch.no_grad():
        for c, p in zip(cached, plain):
            pixels = p["pixel_values"]
            frames, height, width = pixels.shape[2:]
            assert c["pixel_shape"] == (frames, height, width)
            assert torch.equal(c["latents"], model.encode_video(pixels))
            for kind, item in (("all", "cond_all"), ("first", "cond_first"), ("first_last", "cond_first_last")):
                mask = torch.stack([make_mask(kind, frames, height, width, torch.Generator())] * pixels.shape[0])
                assert torch.equal(c["cond"][item], model.inpaint_conditioning(pixels, mask)), kind
            text = model.encode_text(p["texts"], "cpu")
            assert c["text"].keys() == text.keys() == {"embeds", "mask"}
            assert all(torch.equal(c["text"][name], text[name]) for name in text)

    shards = sorted(p.name for p in (cache_dir_of(cfg) / "shards").iterdir())
    pattern = re.compile(r"^(latent|cond|text_embeds|text_mask)-\d+(x\d+)*-(float32|int64)-[0-9a-f]{8}-\d{4}\.safetensors$")
    assert shards and all(pattern.match(n) for n in shards), shards
    assert any(n.startswith("latent-4x2x4x4-float32-") for n in shards)
    from ufo_video.data.cache_store import CacheStore

    assert set(CacheStore(cache_dir_of(cfg), writable=False).items.values()) == set(shards)
    assert not [p for p in cache_dir_of(cfg).rglob("*") if ".tmp" in p.name]


def test_rerun_hits_and_a_changed_file_is_the_only_reencode(tiny_model: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_model, tmp_path, _dataset(tmp_path))
    first = _cache(cfg)
    assert (first.clips_encoded, first.texts_encoded) == (5, 6)  # 5 clips; 5 captions + ""
    again = _cache(cfg)
    assert (again.clips_encoded, again.texts_encoded) == (0, 0)

    st = (tmp_path / "i1.png").stat()
    os.utime(tmp_path / "i1.png", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched
    with pytest.raises(DataError, match=r"i1\.png.*not in the latent cache.*ufo-video data cache"):
        build_cached_loader(cfg, seed=SEED, epoch=0)
    assert _cache(cfg).clips_encoded == 1

    write_mp4(tmp_path / "v0.mp4", frames=12, size=(32, 32), color=(0, 0, 255))  # rewritten
    assert _cache(cfg).clips_encoded == 1
    assert len(list(build_cached_loader(cfg, seed=SEED, epoch=0))) == 3

    records = json.loads((tmp_path / "meta.json").read_text())
    records[0]["text"] = "a new caption"
    write_meta(tmp_path / "meta.json", records)
    report = _cache(cfg)
    assert (report.clips_encoded, report.texts_encoded) == (0, 1)


def test_settings_change_recaches_only_affected_clips_and_prune(tiny_model: Path, tmp_path: Path) -> None:
    static = _cfg(tiny_model, tmp_path, _dataset(tmp_path))
    _cache(static)
    moving = _cfg(tiny_model, tmp_path, tmp_path / "meta.json", clip_mode="video")
    with pytest.raises(DataError, match=r"v\d\.mp4.*not in the latent cache"):
        build_cached_loader(moving, seed=SEED, epoch=0)
    report = _cache(moving)
    assert report.clips_encoded == 2  # the two videos become moving clips; images are unchanged
    assert len(list(build_cached_loader(static, seed=SEED, epoch=0))) == 3  # both settings cached

    # a random start per epoch: epoch 1 was not cached -> the error says how far to cache
    with pytest.raises(DataError, match=r"epoch 1.*--epochs 2"):
        build_cached_loader(moving, seed=SEED, epoch=1)

    pruned = _cache(moving, prune=True)
    assert pruned.clips_encoded == 0 and pruned.pruned_items > 0
    with pytest.raises(DataError, match="not in the latent cache"):
        build_cached_loader(static, seed=SEED, epoch=0)
    assert len(list(build_cached_loader(moving, seed=SEED, epoch=0))) == 3


def test_process_split_uses_the_same_cache_and_order(tiny_model: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_model, tmp_path, _dataset(tmp_path), batch=1)
    assert _cache(cfg, num_processes=2).clips_encoded == 5
    for p in range(2):
        cached = build_cached_loader(cfg, seed=SEED, epoch=0, process_index=p, num_processes=2, skip_batches=1)
        plain = build_train_loader(cfg, seed=SEED, epoch=0, process_index=p, num_processes=2, skip_batches=1)
        assert len(cached) == len(plain)
        assert [b["indices"] for b in cached] == [b["indices"] for b in plain]


def test_missing_cache_locked_cache_and_t2v_model(tiny_models: dict, tmp_path: Path) -> None:
    cfg = _cfg(tiny_models["t2v"], tmp_path, _dataset(tmp_path), cache_dir=str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match=r"no latent cache at .*elsewhere.*ufo-video data cache"):
        build_cached_loader(cfg, seed=SEED, epoch=0)
    with CacheStore(cache_dir_of(cfg), writable=True).locked():
        with pytest.raises(DataError, match="another `ufo-video data cache`"):
            _cache(cfg)
    _cache(cfg, epochs=1)
    batch = next(iter(build_cached_loader(cfg, seed=SEED, epoch=0)))
    assert batch["cond"] == {} and batch["latents"].shape == (2, 4, 2, 4, 4)  # t2v: no inpaint conditioning
    assert set(batch) == {"latents", "latents_std", "text", "cond", "texts", "indices", "is_static", "pixel_shape"}
    assert set(batch["text"]) == {"embeds", "mask"}
    assert batch["latents_std"].shape == batch["latents"].shape and (batch["latents_std"] > 0).all()


def test_fixed_masks_match_the_trainer_masks() -> None:
    from ufo_video.models.easyanimate.masks import make_mask

    for kind in ("all", "first", "first_last"):
        for frames in (1, 2, 5):
            assert torch.equal(fixed_mask(kind, frames, 4, 6), make_mask(kind, frames, 4, 6, torch.Generator())), kind
    assert fixed_mask("first", 5, 2, 2)[0, :, 0, 0].tolist() == [0, 1, 1, 1, 1]
    assert fixed_mask("first_last", 5, 2, 2)[0, :, 0, 0].tolist() == [0, 1, 1, 1, 0]
    with pytest.raises(ValueError, match="not cached"):
        fixed_mask("box", 5, 2, 2)


def test_select_conditioning_picks_per_sample_and_zeroes() -> None:
    cond = {k: torch.full((3, 2, 1, 1, 1), float(v)) for v, k in enumerate(("all", "first", "first_last"), start=1)}
    cond["first"][1] = 7.0
    out = select_conditioning(cond, ["first", "first", "all"], zero=[False, False, True])
    assert out[:, 0, 0, 0, 0].tolist() == [2.0, 7.0, 0.0]


def test_cli_cache_reports_a_missing_file_once_over_epochs_and_processes(tiny_model: Path, tmp_path: Path, capsys,
                                                                        caplog) -> None:
    import logging

    data = tmp_path / "data"
    meta = _dataset(data)
    records = json.loads(meta.read_text()) + [{"file_path": "gone.png", "text": "gone"}]
    meta.write_text(json.dumps(records))
    config_file = tmp_path / "train.toml"
    config_file.write_text(config_to_toml(_cfg(tiny_model, data, meta)))
    with caplog.at_level(logging.WARNING, logger="ufo_video.data"):
        assert main(["data", "cache", str(config_file), "--epochs", "2", "--num-processes", "2"]) == 0
    said = [r.getMessage() for r in caplog.records if "gone.png" in r.getMessage()]
    assert said == [f"data: skipping {data / 'gone.png'}: No such file or directory"]
    assert "2 epoch(s) x 2 process(es)" in capsys.readouterr().out
