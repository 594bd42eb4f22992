"""A model folder is detected and inspected once per process while its files are unchanged, and
again as soon as one changes (models.registry)."""

from __future__ import annotations

import json
import os

from ufo_video.models import registry


def test_a_folder_is_inspected_once_until_a_file_changes(tiny_model, tmp_path, monkeypatch):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    cls = registry.adapter_for(folder)
    calls = []
    real = cls.inspect.__func__
    monkeypatch.setattr(cls, "inspect", classmethod(lambda c, p: calls.append(p) or real(c, p)))
    first = registry.model_shell(folder)
    for _ in range(5):
        assert registry.model_shell(folder).info == first.info
        assert registry.adapter_for(folder) is cls
    assert len(calls) == 1
    # a changed config (same size, new mtime) is read again
    config = folder / "scheduler" / "scheduler_config.json"
    data = json.loads(config.read_text())
    config.write_text(json.dumps(data))
    st = config.stat()
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    registry.model_shell(folder)
    assert len(calls) == 2
    # a file added to a component folder too
    (folder / "vae" / "notes.txt").write_text("x")
    registry.model_shell(folder)
    assert len(calls) == 3


def test_a_run_inspects_its_model_folder_once_and_passes_it_on(tiny_model, tmp_path, monkeypatch):
    """`data cache` and a cache-fed training each detect and inspect the model folder once and hand
    the object to every stage (loaders per epoch, cache, setup, loading): checked with the
    registry's memo switched off, so a stage that looked the folder up again by path would count."""
    from test_train_helpers import make_dataset, write_config

    from ufo_video.cli import main

    cls = registry.adapter_for(tiny_model)
    real = cls.inspect.__func__
    calls = []
    monkeypatch.setattr(cls, "inspect", classmethod(lambda c, p: calls.append(p) or real(c, p)))
    monkeypatch.setattr(registry, "_entry", lambda path: [registry._detect(path), None])  # no memo
    data = make_dataset(tmp_path / "d")
    cfg = write_config(tmp_path / "c.toml", tiny_model, data, tmp_path / "out", max_train_steps=4,
                       checkpointing_steps=4, num_train_epochs=2)
    assert main(["data", "cache", str(cfg), "data.cache_latents=true"]) == 0
    assert len(calls) == 1, calls
    calls.clear()
    # 6 samples in batches of 2: 3 batches per epoch, so the 4 steps build a second epoch's loader
    assert main(["train", str(cfg), "data.cache_latents=true"]) == 0
    assert len(calls) == 1, calls
