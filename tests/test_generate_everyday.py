"""`ufo-video generate` as a user meets it: outputs never lost or overwritten unasked, checks
before the model loads, bad values that name themselves, a progress bar, threads recorded."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from ufo_video.cli import main
from ufo_video.infer import engine

TINY = ["--sample-size", "32", "32", "--video-length", "5", "--steps", "2", "--dtype", "fp32"]


@pytest.fixture
def no_model_loading(monkeypatch):
    """Any attempt to load the model fails the test: the error must come before it."""

    def refuse(*_a, **_k):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(engine.VideoGenerator, "__init__", refuse)


def _err(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_existing_out_is_not_overwritten_unless_asked(tiny_model, tmp_path, capsys):
    out = tmp_path / "v.mp4"
    base = ["generate", "--model", str(tiny_model), *TINY, "--prompt", "a ball", "--out", str(out), "--threads", "1"]
    assert main(base) == 0
    io = capsys.readouterr()
    assert "video: 100%" in io.err and "2/2 [" in io.err  # the denoising progress bar
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["runtime"] == {"threads": 1}
    before = out.read_bytes()
    err = _err(capsys, base)
    assert f"{out} already exists; pass --overwrite to replace it" in err
    assert out.read_bytes() == before
    assert main([*base, "--overwrite", "--seed", "7"]) == 0
    assert out.read_bytes() != before


def test_batch_progress_per_prompt(tiny_model, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a ball\na box\n")
    assert main(["generate", "--model", str(tiny_model), *TINY, "--prompts", str(prompts), "--out-dir", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "prompts: 100%" in err and "2/2" in err and "video 2/2" in err


def test_checks_come_before_the_model_loads(tiny_models, tmp_path, capsys, no_model_loading):
    m = ["generate", "--model", str(tiny_models["diffusers"]), *TINY, "--prompt", "x"]
    img = tmp_path / "s.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    assert "--end-image needs --image" in _err(capsys, [*m, "--end-image", str(img)])
    t2v = ["generate", "--model", str(tiny_models["t2v"]), *TINY, "--prompt", "x", "--image", str(img)]
    assert "cannot make image-to-video; it supports t2v" in _err(capsys, t2v)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = _err(capsys, [*m, "--out", str(blocker / "v.mp4")])
    assert f"output folder {blocker}" in err
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        assert f"output folder {ro} is not writable" in _err(capsys, [*m, "--out", str(ro / "v.mp4")])


@pytest.mark.parametrize(
    ("spec", "needle"),
    [("ufo.safetensors:abc", "the weight 'abc' is not a number"),
     ("ufo.safetensors:nan", "the weight must be a finite number, got 'nan'"),
     ("ufo.safetensors:inf", "the weight must be a finite number, got 'inf'")],
)
def test_bad_lora_weights_name_themselves(tiny_model, capsys, spec, needle, no_model_loading):
    err = _err(capsys, ["generate", "--model", str(tiny_model), *TINY, "--prompt", "x", "--lora", spec])
    assert f"--lora {spec}: {needle}" in err and "not found" not in err


def test_a_lora_path_with_a_colon_still_loads_as_a_path(tmp_path):
    from ufo_video.infer.settings import parse_lora_arg

    odd = tmp_path / "run:3.safetensors"
    odd.write_bytes(b"")
    assert parse_lora_arg(str(odd), 0.15).path == str(odd)
    assert parse_lora_arg(f"{odd}:0.5", 0.15).weight == 0.5
    assert parse_lora_arg("dir:x/ufo.safetensors", 0.15).path == "dir:x/ufo.safetensors"


def test_from_sidecar_reuses_the_recorded_thread_count(tiny_model, tmp_path, capsys):
    import torch

    out = tmp_path / "v.mp4"
    assert main(["generate", "--model", str(tiny_model), *TINY, "--prompt", "a ball", "--out", str(out), "--threads", "2"]) == 0
    torch.set_num_threads(1)
    assert main(["generate", "--from-sidecar", str(out.with_suffix(".json"))]) == 0
    assert "reproduced exactly" in capsys.readouterr().out
    again = json.loads((tmp_path / "v-reproduced.json").read_text())
    assert again["runtime"] == {"threads": 2}
    torch.set_num_threads(1)
