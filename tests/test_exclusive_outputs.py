"""Outputs that are refused unless --overwrite are never replaced, not even by a run that
creates the same name while this one works: the final placement is exclusive (`ufo_video.atomic`)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ufo_video import atomic
from ufo_video.infer.outputs import sidecar_path, write_video_and_sidecar
from ufo_video.infer.settings import GenerationSettings, VideoRequest
from ufo_video.media_write import write_png_frames
from ufo_video.writable import OutputError

SETTINGS = GenerationSettings(model="m", sample_size=(16, 16), video_length=5, fps=8, num_inference_steps=2,
                              guidance_scale=6.0, memory_mode="model_full_load", weight_dtype="fp32")  # fmt: skip
TINY = ["--sample-size", "32", "32", "--video-length", "5", "--steps", "2", "--dtype", "fp32", "--threads", "1"]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_exclusive_placement_loses_to_a_file_made_meanwhile(tmp_path):
    out = tmp_path / "a.json"

    def writer(tmp: Path) -> None:  # another run places its file while this one is still writing
        tmp.write_text("mine")
        out.write_text("theirs")

    with pytest.raises(OutputError, match=r"a\.json already exists; pass --overwrite to replace it"):
        atomic.write_atomic(out, writer, exclusive=True)
    assert out.read_text() == "theirs"
    assert _leftovers(tmp_path) == []  # the temporary file is gone
    # without a competitor the file is placed, with normal permissions
    assert atomic.write_text_atomic(tmp_path / "b.txt", "new", exclusive=True).read_text() == "new"
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o666 & ~atomic._umask()
    assert _leftovers(tmp_path) == []
    # not exclusive: replaced, as before
    atomic.write_atomic(out, lambda tmp: tmp.write_text("mine"))
    assert out.read_text() == "mine"


def test_exclusive_placement_without_hard_links(tmp_path, monkeypatch):
    def no_links(*_a):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(atomic.os, "link", no_links)
    out = tmp_path / "a.txt"
    assert atomic.write_text_atomic(out, "first", exclusive=True).read_text() == "first"
    with pytest.raises(OutputError, match="already exists"):
        atomic.write_text_atomic(out, "second", exclusive=True)
    assert out.read_text() == "first"
    assert _leftovers(tmp_path) == []


def test_exclusive_png_frames_folder(tmp_path):
    frames = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    folder = tmp_path / "frames"
    assert [p.name for p in write_png_frames(frames, folder, exclusive=True)] == ["00000.png", "00001.png"]
    with pytest.raises(OutputError, match="frames already exists"):
        write_png_frames(frames + 1, folder, exclusive=True)
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png"]
    assert _leftovers(tmp_path) == []


def test_a_video_is_not_kept_next_to_another_runs_sidecar(tmp_path):
    frames = np.zeros((5, 16, 16, 3), dtype=np.uint8)
    out = tmp_path / "v.mp4"
    sidecar_path(out).write_text('{"other": "run"}')  # appeared after the check before the work
    with pytest.raises(OutputError) as info:
        write_video_and_sidecar(frames, out, "mp4", SETTINGS, VideoRequest(prompt="x"),
                                exclusive=True)  # fmt: skip
    assert str(info.value).startswith(f"{sidecar_path(out)} already exists (made by another run while this one worked), "
                                      f"so {out} was not kept either; pass --overwrite")  # fmt: skip
    assert not out.exists() and json.loads(sidecar_path(out).read_text()) == {"other": "run"}
    assert _leftovers(tmp_path) == []


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parent.parent / "src")
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
                PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))  # fmt: skip


def test_two_generate_runs_into_one_out_exactly_one_wins(tiny_model, tmp_path):
    out = tmp_path / "same.mp4"

    def start(seed: int) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "ufo_video", "generate", "--model", str(tiny_model), *TINY, "--prompt", "a ball",
               "--seed", str(seed), "--out", str(out)]  # fmt: skip
        return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = start(1)
    assert first.stdout.readline().startswith("loading ")  # past the check before the work
    first.send_signal(signal.SIGSTOP)  # held there until the second run is past its check too
    try:
        second = start(2)
        assert second.stdout.readline().startswith("loading ")
    finally:
        first.send_signal(signal.SIGCONT)
    results = {}
    for seed, proc in ((1, first), (2, second)):
        stdout, stderr = proc.communicate(timeout=300)
        results[seed] = (proc.returncode, stdout, stderr)
    codes = sorted(code for code, _, _ in results.values())
    assert codes == [0, 2], results
    [winner] = [seed for seed, (code, _, _) in results.items() if code == 0]
    [(_, loser_out, loser_err)] = [r for seed, r in results.items() if seed != winner]
    assert f"error: {out} already exists; pass --overwrite to replace it" in loser_err
    assert "wrote" not in loser_out and "Traceback" not in loser_err
    assert f"wrote {out}" in results[winner][1]
    assert json.loads(sidecar_path(out).read_text())["request"]["seed"] == winner  # the pair is the winner's
    assert _leftovers(tmp_path) == []


# ---- every command that refuses an existing output places it exclusively ------------------------
@pytest.fixture(scope="module")
def lora_file(tiny_models, tmp_path_factory) -> Path:
    from test_lora_support import random_lora_file

    return random_lora_file(tiny_models["diffusers"], tmp_path_factory.mktemp("lora") / "a.safetensors", rank=2)


def _made_meanwhile(monkeypatch, module, name: str, target: Path, content: str = "theirs") -> None:
    """`module.name` first creates `target` (another run finishing first), then does its work."""
    original = getattr(module, name)

    def wrapped(*a, **k):
        if target.suffix:
            target.write_text(content)
        else:
            target.mkdir(parents=True)
            (target / "theirs.txt").write_text(content)
        return original(*a, **k)

    monkeypatch.setattr(module, name, wrapped)


def _refused(capsys, argv: list[str], needle: str) -> None:
    from ufo_video.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_lora_convert_and_combine_never_replace_a_file_made_meanwhile(lora_file, tmp_path, monkeypatch, capsys):
    from ufo_video.lora import tools

    dst = tmp_path / "c.safetensors"
    _made_meanwhile(monkeypatch, tools, "convert", dst)
    _refused(capsys, ["lora", "convert", str(lora_file), str(dst), "--to", "peft"], f"{dst} already exists; pass --overwrite")
    assert dst.read_text() == "theirs"
    out = tmp_path / "m.safetensors"
    _made_meanwhile(monkeypatch, tools, "combine_loras", out)
    _refused(capsys, ["lora", "combine", f"{lora_file}:0.5", "--out", str(out)], f"{out} already exists; pass --overwrite")
    assert out.read_text() == "theirs"
    assert _leftovers(tmp_path) == []


def test_lora_bake_never_replaces_a_folder_made_meanwhile(tiny_model, lora_file, tmp_path, monkeypatch, capsys):
    from ufo_video.lora import apply

    out = tmp_path / "baked"
    _made_meanwhile(monkeypatch, apply, "fuse_loras", out)
    _refused(capsys, ["lora", "bake", "--model", str(tiny_model), "--lora", str(lora_file), "--out", str(out)],
             f"{out} exists and is not empty; choose a new folder")  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    assert _leftovers(tmp_path) == []


def test_data_preview_never_replaces_a_clip_made_meanwhile(tmp_path, monkeypatch, capsys):
    from test_data_fixtures import make_dataset

    from ufo_video.data import loader

    meta = make_dataset(tmp_path / "ds", n_images=1, n_videos=0)
    out = tmp_path / "preview"
    _made_meanwhile(monkeypatch, loader, "build_train_loader", out / "0000-entry0.png")
    _refused(capsys, ["data", "preview", str(meta), "--out", str(out), "--n", "1", "image_sample_size=32",
                      "video_sample_n_frames=1", "dataloader_num_workers=0"],
             f"{out / '0000-entry0.png'} already exists; pass --overwrite")  # fmt: skip
    assert (out / "0000-entry0.png").read_text() == "theirs" and _leftovers(out) == []


def test_sweep_refuses_files_of_an_earlier_sweep_before_loading(tiny_model, lora_file, tmp_path, monkeypatch, capsys):
    from ufo_video.infer import engine

    def refuse(*_a, **_k):
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr(engine.VideoGenerator, "__init__", refuse)
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "alpha_0.5.json").write_text("{}")  # a sweep that stopped early (no sweep.json)
    _refused(capsys, ["sweep", "--model", str(tiny_model), *TINY, "--prompt", "x", "--lora", str(lora_file),
                      "--weights", "0,0.5", "--out-dir", str(out)], f"{out / 'alpha_0.5.json'} already exists")  # fmt: skip
