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
