"""Per-epoch costs of the loader: the decode workers and header probes of one epoch serve the next
(the trainer builds a loader per epoch), without changing a single batch."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_fixtures import cfg_for, write_image, write_meta, write_mp4

from ufo_video.data import media, plan, workers
from ufo_video.data.loader import build_train_loader


@pytest.fixture(autouse=True)
def _fresh_workers():
    workers.close_shared_pool()
    yield
    workers.close_shared_pool()


def _dataset(root: Path) -> Path:
    records = []
    for i in range(4):
        write_image(root / f"i{i}.png", size=(40, 32))
        records.append({"file_path": f"i{i}.png", "text": f"image {i}"})
    for i in range(2):
        write_mp4(root / f"v{i}.mp4", frames=9)
        records.append({"file_path": f"v{i}.mp4", "text": f"video {i}"})
    return write_meta(root / "meta.json", records)


def _epoch(cfg, epoch: int) -> list[dict]:
    return list(build_train_loader(cfg, seed=3, epoch=epoch))


def _same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["indices"] == y["indices"] and x["texts"] == y["texts"]
        assert torch.equal(x["pixel_values"], y["pixel_values"])


def _probe_counter(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = plan.map_isolated

    def counting(fn, arg_list, *a, **kw):
        calls.append(len(arg_list))
        return real(fn, arg_list, *a, **kw)

    monkeypatch.setattr(plan, "map_isolated", counting)
    return calls


def _pids() -> set[int]:
    pool = workers._shared["pool"]
    return {p.pid for p in pool._procs.values()}


def test_next_epoch_reuses_workers_and_probes_with_identical_batches(tmp_path: Path, monkeypatch) -> None:
    meta = _dataset(tmp_path)
    cfg = cfg_for(tmp_path, meta, dataloader_num_workers=2)
    calls = _probe_counter(monkeypatch)
    first = _epoch(cfg, 0)
    assert calls == [6]  # every header probed once, on the workers
    pids = _pids()
    second = _epoch(cfg, 1)
    assert calls == [6]  # nothing probed again
    assert _pids() == pids  # the same worker processes decoded epoch 1
    workers.close_shared_pool()
    plan._PROBE_MEMO.clear()
    _same(first, _epoch(cfg, 0))  # fresh workers and probes give the same batches
    _same(second, _epoch(cfg, 1))
    _same(second, _epoch(cfg_for(tmp_path, meta, dataloader_num_workers=0), 1))  # and so does in-process


def test_a_changed_file_is_the_only_one_probed_again(tmp_path: Path, monkeypatch) -> None:
    meta = _dataset(tmp_path)
    cfg = cfg_for(tmp_path, meta, dataloader_num_workers=2)
    build_train_loader(cfg, seed=0, epoch=0)
    calls = _probe_counter(monkeypatch)
    write_image(tmp_path / "i2.png", size=(32, 40))
    st = (tmp_path / "i2.png").stat()
    os.utime(tmp_path / "i2.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    loader = build_train_loader(cfg, seed=0, epoch=0)
    assert calls == [1]
    new, old = loader.samples[2].info, loader.samples[1].info
    assert (new.width, new.height) == (old.height, old.width) != (old.width, old.height)  # the new header


def test_an_abandoned_epoch_leaves_nothing_behind(tmp_path: Path) -> None:
    meta = _dataset(tmp_path)
    cfg = cfg_for(tmp_path, meta, dataloader_num_workers=2)
    expected = _epoch(cfg, 0)
    it = iter(build_train_loader(cfg, seed=3, epoch=0))
    next(it)
    it.close()  # the trainer stops mid-epoch (max_train_steps): prefetched tasks are forgotten
    pool = workers._shared["pool"]
    assert pool.leases == 0 and not pool._pending and not pool._done
    _same(expected, _epoch(cfg, 0))
    deadline = time.monotonic() + 10
    while pool._busy and time.monotonic() < deadline:
        pool._step()
    assert not pool._done and not pool._orphans and not pool._busy


def _square(x: int) -> int:
    return x * x


def test_leases_share_a_pool_without_mixing_keys_and_settings_change_safely() -> None:
    with workers.shared_pool(2, 5.0) as a, workers.shared_pool(2, 5.0) as b:
        assert a.pool is b.pool and not a.owned
        a.submit(0, _square, 3)
        b.submit(0, _square, 4)
        assert b.result(0).value == 16 and a.result(0).value == 9
        with workers.shared_pool(1, 5.0) as other:  # other settings while leased: a private pool
            assert other.owned and other.pool is not a.pool
            other.submit("k", _square, 5)
            assert other.result("k").value == 25
        assert other.pool._procs == {}  # closed with its lease
        a.submit(1, _square, 6)  # forgotten when the lease closes
    old = a.pool
    assert old.leases == 0 and not old._pending and not old._done
    with workers.shared_pool(1, 5.0) as c:  # idle: replaced
        assert c.pool is not old and not c.owned
    assert old._procs == {} and workers._shared["pool"] is c.pool
    with workers.shared_pool(0, 5.0) as inproc:
        assert inproc.owned and inproc.pool.workers == 0


def test_crop_without_resampling_is_exact_and_contiguous() -> None:
    frames = np.arange(2 * 40 * 32 * 3, dtype=np.int64).reshape(2, 40, 32, 3).astype(np.uint8)
    out = media.resize_cover_crop(frames, (32, 32))
    assert np.array_equal(out, frames[:, 4:36])  # centre rows (40 - 32) // 2 = 4
    flipped = frames[:, :, ::-1]
    out = media.resize_cover_crop(flipped, (40, 32))
    assert out.flags.c_contiguous and np.array_equal(out, flipped)
    # with resampling, the Pillow path is unchanged: a 2x upscale of a flat image stays flat
    flat = np.full((1, 16, 16, 3), 77, dtype=np.uint8)
    assert np.array_equal(media.resize_cover_crop(flat, (32, 32)), np.full((1, 32, 32, 3), 77, dtype=np.uint8))


def _array(n: int, flipped: bool) -> np.ndarray:
    a = (np.arange(n * 3, dtype=np.int64) % 251).astype(np.uint8).reshape(n, 3)
    return a[::-1] if flipped else a


def test_results_through_shared_memory_or_the_pipe_are_exact(monkeypatch) -> None:
    big, small = 400_000, 100  # 1.2 MB through the worker's shared mapping, 300 B through the pipe
    with workers.IsolatedPool(2, 20) as pool:
        assert all(m is not None and len(m) == workers.SHARED_BYTES for m in pool._shared.values())
        for i, (n, flipped) in enumerate([(big, False), (big, True), (small, False), (big, False)]):
            pool.submit(i, _array, n, flipped)
        outs = [pool.result(i).value for i in range(4)]
    assert np.array_equal(outs[0], _array(big, False)) and np.array_equal(outs[1], _array(big, True))
    assert np.array_equal(outs[2], _array(small, False)) and outs[3].flags.writeable
    monkeypatch.setattr(workers, "SHARED_BYTES", 1024 * 1024)  # too small for the big result: the pipe
    with workers.IsolatedPool(1, 20) as pool:
        pool.submit("b", _array, big, True)
        assert np.array_equal(pool.result("b").value, _array(big, True))


def test_a_lease_on_a_closed_pool_fails_instead_of_waiting() -> None:
    with workers.shared_pool(1, 5.0) as lease:
        workers.close_shared_pool()
        lease.submit(0, _square, 2)
        with pytest.raises(RuntimeError, match="closed"):
            lease.result(0)


def test_in_a_run_the_sample_list_is_built_once(tmp_path: Path, monkeypatch) -> None:
    meta = _dataset(tmp_path)
    cfg = cfg_for(tmp_path, meta, dataloader_num_workers=0)
    reads: list[int] = []
    real = plan.usable_entries
    monkeypatch.setattr(plan, "usable_entries", lambda d: reads.append(1) or real(d))
    outside = [_epoch(cfg, e) for e in (0, 1)]
    assert len(reads) == 2  # outside a run: every loader reads the metadata
    with plan.sample_list_per_run():
        inside = [_epoch(cfg, e) for e in (0, 1, 2)]
        assert len(reads) == 3  # once for the whole run
        (tmp_path / "i0.png").unlink()  # nothing stats the files again within the run
        assert len(build_train_loader(cfg, seed=3, epoch=3)) == len(outside[0])
    for a, b in zip(outside, inside):
        _same(a, b)


def test_the_collector_is_paused_only_while_planning_and_forked_workers_collect() -> None:
    """`plan.collector_paused` (the loader's planning) restores the collector's state, also after
    an error, and a decode worker forked meanwhile has its own collector on (`workers._child`)."""
    import gc

    from ufo_video.data.workers import map_isolated

    assert gc.isenabled()
    with plan.collector_paused():
        assert not gc.isenabled()
        outcomes = map_isolated(gc.isenabled, [()], 1, 20)  # a fresh pool, forked while paused
    assert [o.value for o in outcomes] == [True] and gc.isenabled()
    with pytest.raises(RuntimeError), plan.collector_paused():
        raise RuntimeError("planning failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with plan.collector_paused():
            pass
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()
