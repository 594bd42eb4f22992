"""The cache store at scale: index appends O(1) per shard (a log folded into the snapshot only
when it outgrows it), crash-torn lines ignored, and trailing zero rows stored without changing a bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ufo_video.data import cache_store
from ufo_video.data.cache_store import CacheStore, pad_rows, trim_trailing_zeros
from ufo_video.errors import DataError


def test_trim_keeps_every_bit() -> None:
    t = torch.zeros(40, 3)
    t[:5] = torch.randn(5, 3)
    trimmed = trim_trailing_zeros(t)
    assert trimmed.shape == (16, 3)  # a multiple of 16 rows
    assert torch.equal(pad_rows(trimmed, 40), t)
    neg = t.clone()
    neg[30, 1] = -0.0  # equal to 0 but not zero bits: kept
    assert trim_trailing_zeros(neg).shape[0] == 32
    assert torch.equal(pad_rows(trim_trailing_zeros(neg), 40).view(torch.int32), neg.view(torch.int32))
    mask = torch.tensor([1] * 7 + [0] * 249)
    assert trim_trailing_zeros(mask).shape == (16,) and torch.equal(pad_rows(trim_trailing_zeros(mask), 256), mask)
    full = torch.randn(20, 2)
    assert trim_trailing_zeros(full) is full


def test_text_items_are_stored_trimmed_and_read_back_exactly(tmp_path: Path) -> None:
    store = CacheStore(tmp_path, writable=True)
    emb = torch.zeros(256, 8, dtype=torch.bfloat16)
    emb[:9] = torch.randn(9, 8).bfloat16()
    mask = torch.tensor([1] * 9 + [0] * 247)
    dense = torch.randn(256, 8).bfloat16()  # hidden states at padded positions are data: kept
    store.put("a.embeds", "text_embeds", emb)
    store.put("a.mask", "text_mask", mask)
    store.put("b.embeds", "text_embeds", dense)
    assert torch.equal(store.get("a.embeds"), emb)  # before the flush too
    store.flush()
    again = CacheStore(tmp_path, writable=False)
    for key, want in (("a.embeds", emb), ("a.mask", mask), ("b.embeds", dense)):
        got = again.get(key)
        assert got.dtype == want.dtype and torch.equal(got, want), key
    shard_bytes = sum(p.stat().st_size for p in (tmp_path / "shards").iterdir() if "a" in p.name)
    assert any("text_embeds-16x8-bfloat16" in p.name for p in (tmp_path / "shards").iterdir())
    assert shard_bytes > 0


def test_index_appends_constant_bytes_per_shard(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cache_store, "MIN_COMPACT_BYTES", 4096)
    compactions: list[int] = []
    real = CacheStore._compact
    monkeypatch.setattr(CacheStore, "_compact", lambda self: compactions.append(len(self.items)) or real(self))
    store = CacheStore(tmp_path, writable=True)
    sizes = []
    for shard in range(200):
        for i in range(5):
            store.put(f"k{shard}-{i}", "latent", torch.full((2,), float(shard)))
        store.flush()
        sizes.append(store._log_bytes)
    grows = [b - a for a, b in zip(sizes, sizes[1:]) if b > a]
    assert max(grows) - min(grows) <= 16  # one line per shard, the same size whatever the index holds (digits aside)
    # the snapshot is rewritten only when the log outgrows it: about log2(N) times, not N
    assert 2 <= len(compactions) <= 12, compactions
    assert all(b >= 1.8 * a for a, b in zip(compactions[1:], compactions[2:])), compactions
    reread = CacheStore(tmp_path, writable=False)
    assert len(reread.items) == 1000 and torch.equal(reread.get("k199-4"), torch.full((2,), 199.0))


def test_torn_last_line_is_ignored_and_failures_persist(tmp_path: Path) -> None:
    store = CacheStore(tmp_path, writable=True)
    store.put("x", "latent", torch.ones(3))
    store.flush()  # first write: snapshot
    store.put("y", "latent", torch.ones(3))
    store.record_failure("clip-1", "bad file")
    store.flush()
    store.failures.pop("clip-1")  # a retried clip that now works (data cache does this)
    store.put("z", "latent", torch.ones(3))
    store.flush()
    with open(tmp_path / "index.log", "ab") as fh:
        fh.write(b'{"shard":"never-written.safetensors","items":["w"')  # crash during an append
    again = CacheStore(tmp_path, writable=False)
    assert set(again.items) == {"x", "y", "z"} and again.failures == {}
    (tmp_path / "index.log").write_bytes(b"garbage\n" + b'{"shard":"s","items":[]}\n')
    with pytest.raises(DataError, match="index.log: line 1 is corrupt"):
        CacheStore(tmp_path, writable=False)


def test_prune_folds_the_log_into_the_snapshot(tmp_path: Path) -> None:
    store = CacheStore(tmp_path, writable=True)
    for key in ("a", "b"):
        store.put(key, "latent", torch.ones(2))
        store.flush()
    store.prune({"a"})
    assert (tmp_path / "index.log").read_bytes() == b""
    assert set(json.loads((tmp_path / "index.json").read_text())["items"]) == {"a"}
