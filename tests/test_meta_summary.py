"""The stored meta-device results (assets/meta-summaries.json) equal what diffusers' and
transformers' classes give today for every shipped configs folder, and are used only for a folder
with exactly those files."""

from __future__ import annotations

import json
import shutil

from ufo_video.cli import main
from ufo_video.models import meta_summary, meta_summary_build


def test_the_store_equals_a_fresh_build_of_every_shipped_configs_folder():
    """Fails when a shipped config, a family's build code or a library version changed the
    models: regenerate with `python -m ufo_video.models.meta_summary_build`."""
    stored = json.loads(meta_summary.STORE.read_text())
    fresh = meta_summary_build.generate()
    assert sorted(stored["folders"]) == sorted(fresh["folders"])
    for name, entry in fresh["folders"].items():
        assert stored["folders"][name] == json.loads(json.dumps(entry)), f"{name}: the store is stale"
    names_folders = [e for e in fresh["folders"].values() if "module_names" in e]
    assert {e["report"]["family"] for e in names_folders} == {"easyanimate", "wan", "ltx2"}


def test_names_tree_has_exactly_the_stored_module_paths():
    entry = next(e for e in json.loads(meta_summary.STORE.read_text())["folders"].values() if "module_names" in e)
    names = entry["module_names"]["transformer"]
    assert [n for n, _ in meta_summary.names_tree(names).named_modules() if n] == names


def test_a_folder_with_other_files_is_never_answered_from_the_store(tmp_path, capsys):
    folder = tmp_path / "m"
    shutil.copytree(meta_summary.ASSETS / "wan-configs" / "wan2.1-t2v-1.3b", folder)
    assert meta_summary.lookup(folder) is not None  # the same files: a hit wherever they are
    (folder / "README.md").write_text("notes do not change the model")
    assert meta_summary.lookup(folder) is not None
    config = folder / "transformer" / "config.json"
    data = json.loads(config.read_text())
    data["num_layers"] = 2
    config.write_text(json.dumps(data))
    assert meta_summary.lookup(folder) is None
    assert main(["model", "check", "--meta", "--json", str(folder)]) == 0  # built from the classes
    counts = {c["name"]: c["parameters"] for c in json.loads(capsys.readouterr().out)["components"]}
    assert 0 < counts["transformer"] < 1_418_996_800 / 10  # 2 of 30 blocks, not the stored 1.3B
    (folder / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert meta_summary.fingerprint(folder) is None  # a weight file: its adapter checks the headers
    (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "vae" / "deeper").mkdir()
    assert meta_summary.fingerprint(folder) is None  # not a model folder's shape: never walked further


def test_a_folder_that_is_no_model_folder_is_refused_as_before(capsys):
    assert meta_summary.fingerprint("/") is None  # no walk of a whole tree
    assert main(["model", "check", "--meta", "/"]) == 2
    assert "not a model folder of a known family" in capsys.readouterr().err
