"""A run says what it really trains: the train_mode that applies to the model (a text-to-video
model trains text-only whatever train.train_mode says), and on a two-expert model which expert and
which timesteps; the LoRA file's metadata (shown by `lora inspect`) says the same."""

from __future__ import annotations

import pytest

from test_train_helpers import make_dataset, metadata, write_config
from ufo_video.cli import main
from ufo_video.models.registry import make_tiny_model


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds"), images=2, videos=0)


def _train(tmp_path, model, data, *overrides):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", model, data, out, max_train_steps=1, checkpointing_steps=1,
                       save_state=False, train_batch_size=1)  # fmt: skip
    assert main(["train", str(cfg), *overrides]) == 0
    return out / "checkpoint-1.safetensors"


def test_t2v_model_reports_text_only_training(tmp_path, dataset, capsys):
    model, _ = make_tiny_model("wan", tmp_path / "t2v", layout=None, variant="t2v")
    capsys.readouterr()
    lora = _train(tmp_path, model, dataset, "train.train_mode=inpaint")
    out = capsys.readouterr().out
    assert "train_mode=normal" in out and "train.train_mode=inpaint does not apply" in out
    assert metadata(lora)["ufo_train_mode"] == "normal"
    html = (lora.parent / "train-report.html").read_text()
    assert "<td>train_mode</td><td>normal</td>" in html


def test_two_expert_run_names_its_expert_and_timesteps(tmp_path, dataset, capsys):
    model, _ = make_tiny_model("wan", tmp_path / "a14b", layout=None, variant="a14b")
    capsys.readouterr()
    lora = _train(tmp_path, model, dataset, "train.expert=transformer_2")
    out = capsys.readouterr().out
    assert "expert: transformer_2 (timesteps 0-875 of 1000" in out
    meta = metadata(lora)
    assert meta["ufo_expert"] == "transformer_2" and meta["ufo_expert_timesteps"] == "0-875"
    assert main(["lora", "inspect", str(lora)]) == 0
    shown = capsys.readouterr().out
    assert "ufo_expert: transformer_2" in shown and "ufo_expert_timesteps: 0-875" in shown
    assert "expert</td><td>transformer_2 (timesteps 0-875" in (lora.parent / "train-report.html").read_text()
