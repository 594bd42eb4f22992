"""The trainer contract of ``build_train_loader``: static clips, buckets, determinism, process
split, exact resume, skip-and-refill of bad samples and the max_failed_fraction stop."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from test_data_fixtures import cfg_for, make_dataset, write_image, write_meta, write_mp4

from ufo_video.data.loader import build_train_loader
from ufo_video.errors import DataError


@pytest.fixture(autouse=True)
def _fresh_workers():
    """Decode workers persist in the process (``workers.shared_pool``) and are forked once, so a
    test that monkeypatches what the workers run must not inherit, or leave behind, forked copies."""
    from ufo_video.data.workers import close_shared_pool

    close_shared_pool()
    yield
    close_shared_pool()


def _batches(cfg, **kw) -> list[dict]:
    return list(build_train_loader(cfg, seed=kw.pop("seed", 7), epoch=kw.pop("epoch", 0), **kw))


def _red_dataset(root: Path) -> Path:
    records = []
    for i in range(3):
        write_image(root / f"r{i}.png", size=(48, 64) if i else (64, 48))
        records.append({"file_path": f"r{i}.png", "text": f"red image {i}"})
    for i in range(3):
        write_mp4(root / f"r{i}.mp4", frames=9)
        records.append({"file_path": f"r{i}.mp4", "text": f"red video {i}"})
    return write_meta(root / "meta.json", records)


def test_static_clips_are_red_exactly_static_and_views(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, _red_dataset(tmp_path), train_batch_size=2, video_sample_n_frames=9)
    batches = _batches(cfg)
    seen = set()
    for b in batches:
        pv = b["pixel_values"]
        assert pv.dtype == torch.float32 and pv.ndim == 5 and pv.shape[:3] == (2, 3, 9)
        assert pv.min() >= -1 and pv.max() <= 1
        assert pv.stride(2) == 0  # expanded view: one frame of memory per sample
        assert torch.equal(pv, pv[:, :, :1].expand_as(pv))  # exactly static
        r, g, bl = pv[:, 0].mean(), pv[:, 1].mean(), pv[:, 2].mean()
        assert r > 0.9 and g < -0.9 and bl < -0.9, "red must stay red (no RGB/BGR swap)"
        assert b["is_static"].dtype == torch.bool and b["is_static"].all()
        assert len(b["texts"]) == 2 and len(b["indices"]) == 2
        seen.update(b["indices"])
    assert seen == set(range(6))


def test_flip_applies_to_the_single_frame_before_expansion(tmp_path: Path) -> None:
    img = torch.zeros(32, 32, 3, dtype=torch.uint8)
    img[:, :16] = torch.tensor([255, 0, 0], dtype=torch.uint8)
    from PIL import Image

    for i in range(8):
        Image.fromarray(img.numpy()).save(tmp_path / f"h{i}.png")
    meta = write_meta(tmp_path / "m.json", [{"file_path": f"h{i}.png", "text": "x"} for i in range(8)])
    cfg = cfg_for(tmp_path, meta, random_flip=True)
    lefts = []
    for b in _batches(cfg):
        pv = b["pixel_values"][0]
        assert torch.equal(pv, pv[:, :1].expand_as(pv))
        lefts.append(bool(pv[0, 0, 16, 2] > 0.9))  # red channel at the left edge
    assert 0 < sum(lefts) < 8  # some flipped, some not


def test_bucket_assignment_and_every_sample_planned(tmp_path: Path) -> None:
    meta = make_dataset(tmp_path, n_images=6, n_videos=3)
    cfg = cfg_for(tmp_path, meta, train_batch_size=2, image_sample_size=64, video_sample_size=32)
    loader = build_train_loader(cfg, seed=0, epoch=0)
    planned = {i for b in loader.batches for i in b.indices}
    assert planned == set(range(9))
    sizes = {(b.bucket.height, b.bucket.width) for b in loader.batches}
    # images 40x60 -> ratio 0.67 at side 64: (416, 608)*64/512 = (52, 76) -> (48, 80); 64x32 -> (96, 48);
    # videos 48x64 at side 32: (448, 576)*32/512 = (28, 36) -> (32, 32)
    assert sizes == {(48, 80), (96, 48), (32, 32)}
    for b in _batches(cfg, seed=0):
        assert b["pixel_values"].shape[-2:] in {(48, 80), (96, 48), (32, 32)}


def test_token_budget_caps_frames_for_large_sides(tmp_path: Path) -> None:
    meta = make_dataset(tmp_path, n_images=2, n_videos=0)
    cfg = cfg_for(tmp_path, meta, image_sample_size=64, token_sample_size=32, video_sample_n_frames=9)
    # frames * 64^2 <= 9 * 32^2 -> 2.25 -> 1 frame (4k+1)
    assert {b.bucket.frames for b in build_train_loader(cfg, seed=0, epoch=0).batches} == {1}


def test_determinism_and_epochs_differ(tmp_path: Path) -> None:
    meta = make_dataset(tmp_path, n_images=8, n_videos=2)
    cfg = cfg_for(tmp_path, meta, train_batch_size=2, text_drop_ratio=0.3)
    a, b = _batches(cfg, epoch=1), _batches(cfg, epoch=1)
    assert [x["indices"] for x in a] == [x["indices"] for x in b]
    assert [x["texts"] for x in a] == [x["texts"] for x in b]
    assert all(torch.equal(x["pixel_values"], y["pixel_values"]) for x, y in zip(a, b))
    orders = {tuple(tuple(x.indices) for x in build_train_loader(cfg, seed=7, epoch=e).batches) for e in range(4)}
    assert len(orders) > 1


def test_process_split_equals_single_process_with_bigger_batch(tmp_path: Path) -> None:
    meta = make_dataset(tmp_path, n_images=7, n_videos=3)
    single = _batches(cfg_for(tmp_path, meta, train_batch_size=4), seed=3, epoch=2)
    parts = [_batches(cfg_for(tmp_path, meta, train_batch_size=2), seed=3, epoch=2, process_index=i,
                      num_processes=2) for i in range(2)]
    assert len(parts[0]) == len(parts[1]) == len(single)
    for s, p0, p1 in zip(single, *parts):
        assert s["indices"] == p0["indices"] + p1["indices"]
        assert s["texts"] == p0["texts"] + p1["texts"]
        assert torch.equal(s["pixel_values"], torch.cat([p0["pixel_values"], p1["pixel_values"]]))


def test_skip_batches_is_an_exact_resume(tmp_path: Path) -> None:
    meta = make_dataset(tmp_path, n_images=6, n_videos=2)
    cfg = cfg_for(tmp_path, meta, train_batch_size=2)
    full = _batches(cfg)
    loader = build_train_loader(cfg, seed=7, epoch=0, skip_batches=2)
    assert len(loader) == len(full)  # len is the epoch's batch count
    resumed = list(loader)
    assert [b["indices"] for b in resumed] == [b["indices"] for b in full[2:]]
    assert all(torch.equal(x["pixel_values"], y["pixel_values"]) for x, y in zip(resumed, full[2:]))


def test_bad_sample_is_skipped_counted_logged_and_refilled(tmp_path: Path, caplog) -> None:
    records = []
    for i in range(24):
        write_image(tmp_path / f"i{i}.jpg", size=(32, 32))
        records.append({"file_path": f"i{i}.jpg", "text": f"t{i}"})
    meta = write_meta(tmp_path / "m.json", records)
    cfg = cfg_for(tmp_path, meta, train_batch_size=3, dataloader_num_workers=2)
    loader = build_train_loader(cfg, seed=1, epoch=0)
    again = build_train_loader(cfg, seed=1, epoch=0)
    victim = loader.batches[1].indices[0]
    good = (tmp_path / f"i{victim}.jpg").read_bytes()
    (tmp_path / f"i{victim}.jpg").write_bytes(good[: len(good) // 2])  # broken after planning
    with caplog.at_level(logging.WARNING, logger="ufo_video.data"):
        batches = list(loader)
    assert len(loader.failures) == 1 and loader.failures[0][0].endswith(f"i{victim}.jpg")
    assert "truncated" in loader.failures[0][1].lower()
    assert sum(f"i{victim}.jpg" in r.getMessage() for r in caplog.records) == 1
    assert all(b["pixel_values"].shape[0] == 3 for b in batches)  # refilled, never short
    assert victim not in batches[1]["indices"] and len(set(batches[1]["indices"])) == 3
    assert [b["indices"] for b in again] == [b["indices"] for b in batches]  # refill is deterministic


def test_too_many_failures_stop_with_a_clear_error(tmp_path: Path) -> None:
    meta = make_dataset(tmp_path, n_images=10, n_videos=0)
    cfg = cfg_for(tmp_path, meta)
    loader = build_train_loader(cfg, seed=1, epoch=0)
    for i in range(5):
        (tmp_path / f"img{i}.png").write_bytes(b"not an image any more")
    with pytest.raises(DataError, match="max_failed_fraction=0.05"):
        list(loader)


def test_broken_files_found_at_planning_are_reported_or_stop(tmp_path: Path) -> None:
    meta = make_dataset(tmp_path, n_images=30, n_videos=0)
    records = json.loads(meta.read_text())
    (tmp_path / "zero.mp4").write_bytes(b"")
    write_meta(meta, records + [{"file_path": "zero.mp4", "text": "broken"}])
    loader = build_train_loader(cfg_for(tmp_path, meta), seed=0, epoch=0)  # 1/31 < 5 %
    assert [p for p, _ in loader.failures] == [str(tmp_path / "zero.mp4")]
    assert 30 not in {i for b in loader.batches for i in b.indices}
    with pytest.raises(DataError, match="1 of 31 samples failed"):
        build_train_loader(cfg_for(tmp_path, meta, max_failed_fraction=0.01), seed=0, epoch=0)


def test_outside_paths_stop_training(tmp_path: Path) -> None:
    write_image(tmp_path / "outside.png")
    root = tmp_path / "root"
    root.mkdir()
    meta = write_meta(root / "m.json", [{"file_path": "../outside.png", "text": "x"}])
    with pytest.raises(DataError, match="outside the dataset root"):
        build_train_loader(cfg_for(root, meta), seed=0, epoch=0)
    assert len(build_train_loader(cfg_for(root, meta, allow_outside_paths=True), seed=0, epoch=0)) == 1


def test_video_mode_moving_clips_and_short_policy(tmp_path: Path) -> None:
    write_mp4(tmp_path / "long.mp4", frames=20, moving=True)
    write_mp4(tmp_path / "short.mp4", frames=10, moving=True)
    meta = write_meta(tmp_path / "m.json", [{"file_path": "long.mp4", "text": "a"}, {"file_path": "short.mp4", "text": "b"}])
    base = dict(clip_mode="video", video_sample_n_frames=9, video_sample_stride=2)
    skip = build_train_loader(cfg_for(tmp_path, meta, short_video_policy="skip", **base), seed=0, epoch=0)
    assert {i for b in skip.batches for i in b.indices} == {0}
    assert len(skip.notices) == 1 and "short.mp4" in skip.notices[0][0]
    fewer = cfg_for(tmp_path, meta, short_video_policy="fewer_frames", **base)
    frames = {b["indices"][0]: b["pixel_values"].shape[2] for b in _batches(fewer)}
    assert frames == {0: 9, 1: 5}
    for b in _batches(cfg_for(tmp_path, meta, short_video_policy="reduce_stride", **base)):
        pv = b["pixel_values"][0]
        assert pv.shape[1] == 9 and not b["is_static"][0]
        assert not torch.equal(pv[:, 0], pv[:, 1])  # frames move


_REAL_TASK_SAMPLE = None


def _hang_or_crash_on_named_files(path: str, media_type: str, limits, spec):
    """Stands in for a decoder that hangs on hang*.png and segfaults on crash*.png."""
    import faulthandler
    import os
    import signal
    import time

    name = Path(path).name
    if name.startswith("hang"):
        time.sleep(60)
    if name.startswith("crash"):
        faulthandler.disable()
        os.kill(os.getpid(), signal.SIGSEGV)
    return _REAL_TASK_SAMPLE(path, media_type, limits, spec)


def test_hanging_and_crashing_decoders_cost_one_sample_not_the_run(tmp_path: Path, monkeypatch) -> None:
    global _REAL_TASK_SAMPLE
    from ufo_video.data import media

    _REAL_TASK_SAMPLE = media.task_sample
    monkeypatch.setattr(media, "task_sample", _hang_or_crash_on_named_files)
    names = ["hang0.png", "crash0.png"] + [f"ok{i}.png" for i in range(38)]
    for n in names:
        write_image(tmp_path / n, size=(32, 32))
    meta = write_meta(tmp_path / "m.json", [{"file_path": n, "text": n} for n in names])
    cfg = cfg_for(tmp_path, meta, train_batch_size=4, dataloader_num_workers=2, decode_timeout=1.0)
    loader = build_train_loader(cfg, seed=0, epoch=0)
    assert loader.failures == []  # planning reads headers only; both files are fine there
    batches = list(loader)
    used = [i for b in batches for i in b["indices"]]
    assert len(batches) == 10 and all(len(b["indices"]) == 4 for b in batches)
    assert 0 not in used and 1 not in used
    reasons = {Path(p).name: r for p, r in loader.failures}
    assert "timed out after 1 s" in reasons["hang0.png"] and "SIGSEGV" in reasons["crash0.png"]
