"""`overwrite_output_dir=true` deletes the old run only once the new one's dataset and model are
ready, and names what it deleted (through `ufo-video train`)."""

from __future__ import annotations

import shutil

from test_train_helpers import losses, make_dataset, write_config
from ufo_video.cli import main
from ufo_video.train.output_lock import LOCK_NAME


def test_overwrite_output_dir_keeps_the_old_run_when_the_new_one_fails_its_checks(tiny_model, tmp_path, capsys):
    good = make_dataset(tmp_path / "good")
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", tiny_model, good, out, max_train_steps=2, checkpointing_steps=1)
    assert main(["train", str(cfg)]) == 0
    old = sorted(p.name for p in out.iterdir())
    old_losses = losses(out)
    assert "checkpoint-2.safetensors" in old
    # a dataset whose files are all missing: the new run fails, the old run is all still there
    broken = tmp_path / "broken"
    shutil.copytree(good, broken)
    shutil.rmtree(broken / "train")
    bad = write_config(tmp_path / "b.toml", tiny_model, broken, out, max_train_steps=1, overwrite_output_dir=True)
    capsys.readouterr()
    assert main(["train", str(bad)]) == 2
    io = capsys.readouterr()
    assert "error:" in io.err and "removed the previous run" not in io.out
    # (the failed run may add its own skipped-files.txt: nothing of the old run is gone or changed)
    assert set(old) <= {p.name for p in out.iterdir()} and losses(out) == old_losses
    # a good dataset: the old outputs go (after the model was set up), and the message names them
    assert main(["train", str(cfg), "overwrite_output_dir=true", "max_train_steps=1"]) == 0
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if "removed the previous run's" in x)
    n = len([name for name in old if name != LOCK_NAME])  # checkpoints, losses.jsonl, config.toml, the report
    assert line == (f"overwrite_output_dir: removed the previous run's {n} outputs from {out}: checkpoint-1, "
                    f"checkpoint-1.safetensors, checkpoint-2, checkpoint-2.safetensors, losses.jsonl ... ({n - 5} more)")
    assert text.index(f"loading {tiny_model}") < text.index("removed the previous run's")
    assert losses(out) == [(1, losses(out)[0][1])]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-1.safetensors"]
