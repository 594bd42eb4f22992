"""A latent-cache shard that is truncated or deleted after it was written: training names it
before the model loads, and `ufo-video data cache` encodes exactly its entries again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_train_helpers import losses, make_dataset, write_config
from ufo_video.cli import main
from ufo_video.data.cache_store import CacheStore
from ufo_video.models import registry


@pytest.fixture
def run(tiny_model, tmp_path) -> dict:
    data = make_dataset(tmp_path / "data", images=3, videos=1)
    cfg = write_config(tmp_path / "c.toml", tiny_model, data, tmp_path / "out", train_mode="normal", save_state=False,
                       max_train_steps=2, checkpointing_steps=2)  # fmt: skip
    args = [f"data.cache_dir={tmp_path / 'cache'}", "data.cache_latents=true"]
    return {"cfg": str(cfg), "args": args, "cache": tmp_path / "cache", "tmp": tmp_path}


def _train(run: dict, out: str) -> int:
    return main(["train", run["cfg"], *run["args"], f"train.output_dir={run['tmp'] / out}"])


def _entries(cache: Path) -> dict[str, list[str]]:
    """Shard file -> the keys the index lists in it."""
    store = CacheStore(cache, writable=False)
    return {name: [k for k, v in store.items.items() if v == name] for name in set(store.items.values())}


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_damaged_shard_is_named_before_loading_and_data_cache_reencodes_it(run, damage, monkeypatch, capsys):
    assert main(["data", "cache", run["cfg"], *run["args"]]) == 0
    assert _train(run, "fresh") == 0
    fresh = losses(run["tmp"] / "fresh")
    entries = _entries(run["cache"])
    kind = "latent-" if damage == "truncate" else "text_embeds-"
    shard = sorted(n for n in entries if n.startswith(kind))[0]
    path = run["cache"] / "shards" / shard
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()
    capsys.readouterr()

    real_load = registry.load_model

    def refuse(*_a, **_k):
        raise AssertionError("the model was loaded before the cache was checked")

    monkeypatch.setattr(registry, "load_model", refuse)
    assert _train(run, "refused") == 2
    err = capsys.readouterr().err
    n = len(entries[shard])
    why = "is missing" if damage == "delete" else f"is {path.stat().st_size} bytes, written as {2 * path.stat().st_size}"
    assert f"{path} {why}" in err and f"({n} entries)" in err, err
    assert "This run's samples in them" in err and "`ufo-video data cache CONFIG" in err
    monkeypatch.setattr(registry, "load_model", real_load)

    assert main(["data", "cache", run["cfg"], *run["args"]]) == 0
    out = capsys.readouterr().out
    assert f"shard {shard} {why}" in out and f"dropped its {n} entries" in out
    if damage == "truncate":  # exactly the clips with an item in the shard are encoded again
        clips = {k.rsplit(".", 1)[0] for k in entries[shard]}
        assert f"clips: 4 used, {len(clips)} encoded now" in out, out
    else:  # a text's embedding and mask are separate shards; the captions with one in it
        assert f"texts: 5 used, {n} encoded now" in out, out
    assert not path.exists()  # the damaged file went with its entries
    assert _train(run, "again") == 0
    assert losses(run["tmp"] / "again") == fresh


def test_indexes_without_recorded_sizes_are_checked_by_the_safetensors_header(tmp_path):
    store = CacheStore(tmp_path, writable=True)
    store.put("a", "latent", torch.randn(4, 8))
    store.put("b", "latent", torch.randn(4, 8))
    store.flush()
    [shard] = list((tmp_path / "shards").iterdir())
    assert CacheStore(tmp_path, writable=False).damaged_shards() == {}
    # an index written before sizes were recorded
    index = json.loads((tmp_path / "index.json").read_text())
    assert index.pop("shard_bytes") == {shard.name: shard.stat().st_size}
    (tmp_path / "index.json").write_text(json.dumps(index))
    log = [json.loads(line) for line in (tmp_path / "index.log").read_text().splitlines() if line]
    (tmp_path / "index.log").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "bytes"}) + "\n" for r in log))
    assert CacheStore(tmp_path, writable=False).shard_bytes == {}
    assert CacheStore(tmp_path, writable=False).damaged_shards() == {}
    shard.write_bytes(shard.read_bytes()[:-1])
    [(name, why)] = CacheStore(tmp_path, writable=False).damaged_shards().items()
    assert name == shard.name and why.startswith("is truncated (") and "its header needs" in why
    shard.write_bytes(shard.read_bytes()[:5])
    assert "shorter than its safetensors header" in CacheStore(tmp_path, writable=False).damaged_shards()[shard.name]
    why = CacheStore(tmp_path, writable=False).damaged_shards()[shard.name]
    assert CacheStore(tmp_path, writable=True).drop_damaged() == {shard.name: (why, 2)}
    assert not shard.exists() and CacheStore(tmp_path, writable=False).items == {}
