"""Issue 14's rules through the CLI: bad values name themselves, data check and train share one
short-clip rule, every bad metadata entry in one pass, tables instead of dicts, eval scores what
it can, outputs never replaced unasked, a thread default that does not oversubscribe."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from test_data_fixtures import make_dataset, write_image, write_meta, write_mp4
from test_train_helpers import write_config
from ufo_video.cli import main

REPO = Path(__file__).resolve().parent.parent
TINY_BASE = REPO / "src" / "ufo_video" / "assets" / "tiny-base"


# ---- config and script values -----------------------------------------------------------------


def test_an_overrides_bad_value_blames_the_override_not_the_file(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nlearning_rate = 1e-4\n")
    meta = make_dataset(tmp_path / "ds", n_images=1, n_videos=0)
    assert main(["data", "check", str(meta), "--config", str(cfg), "learning_rate=abc"]) == 2
    err = capsys.readouterr().err
    assert "command line: invalid configuration" in err and "override 'learning_rate=abc'" in err
    assert str(cfg) not in err
    cfg.write_text("[train]\nlearning_rate = -1\n")
    assert main(["data", "check", str(meta), "--config", str(cfg)]) == 2
    assert f"{cfg}: invalid configuration" in capsys.readouterr().err


def test_a_typod_section_gets_a_suggestion(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[trian]\nlearning_rate = 1e-4\n")
    meta = make_dataset(tmp_path / "ds", n_images=1, n_videos=0)
    assert main(["data", "check", str(meta), "--config", str(cfg)]) == 2
    assert "unknown config key 'trian'. Did you mean: train" in capsys.readouterr().err
    assert main(["data", "check", str(meta), "trian.learning_rate=1e-4"]) == 2
    assert "Did you mean: train.learning_rate?" in capsys.readouterr().err


def test_predict_script_unknown_variable_gets_did_you_mean():
    result = subprocess.run([sys.executable, str(REPO / "predict_t2v.py"), "lora_wieght=0.1"], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO / "src")})  # fmt: skip
    assert result.returncode == 2
    assert "predict_t2v.py: unknown variable 'lora_wieght'. Did you mean: lora_weight?" in result.stderr
    assert "Traceback" not in result.stderr


def test_rounding_notices_use_the_models_own_numbers(capsys, monkeypatch):
    """The shipped tiny base's VAE compresses 4x in space and 2x in time (not the 12B's 8x/4x)."""
    from ufo_video.errors import UfoError
    from ufo_video.infer import engine

    def stop(*_a, **_k):
        raise UfoError("stopped before loading")

    monkeypatch.setattr(engine.VideoGenerator, "__init__", stop)
    assert main(["generate", "--model", str(TINY_BASE), "--prompt", "x", "--sample-size", "70", "60",
                 "--video-length", "8", "--out", "/tmp/never-written.mp4"]) == 2  # fmt: skip
    out = capsys.readouterr().out
    assert "sample size 70x60 is not a multiple of 8 (VAE 4x times patch 2); using 72x64" in out
    assert "video_length 8 is not 2k+1 (the VAE compresses time 2x causally); using 9" in out


# ---- data ---------------------------------------------------------------------------------------


def test_every_bad_metadata_entry_in_one_pass_and_counts_add_up(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    write_meta(tmp_path / "m.json", [{"file_path": "a.png", "text": "ok"}, {"file_path": "b.png", "text": 3},
                                     {"file_path": "c.png", "text": "x", "type": "audio"}, {"text": "no path"}])
    assert main(["data", "check", str(tmp_path / "m.json"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert sorted((p["index"], p["problem"]) for p in report["problems"]) == [
        (1, "wrong_type"), (2, "wrong_type"), (3, "missing_field")]
    assert report["entries"] == 4 and report["ok"] + report["with_problems"] + report["unchecked"] == 4
    assert main(["data", "check", str(tmp_path / "m.json")]) == 1
    text = capsys.readouterr().out
    assert text.startswith("4 entries: 0 ok, 3 with problems, 1 not checked") and "(3 problems)" in text
    # train refuses the file with all three named at once
    cfg = write_config(tmp_path / "c.toml", TINY_BASE, tmp_path, tmp_path / "out")
    cfg.write_text(cfg.read_text().replace(str(tmp_path / "metadata.json"), str(tmp_path / "m.json")))
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "3 bad entries" in err and "entry 1" in err and "entry 2" in err and "entry 3" in err


def test_check_and_train_follow_one_short_clip_rule(tmp_path, capsys):
    root = tmp_path / "ds"
    write_mp4(root / "short.mp4", frames=9, size=(32, 32))
    write_image(root / "a.png", size=(32, 32))
    write_image(root / "b.png", size=(32, 32))
    meta = write_meta(root / "metadata.json", [{"file_path": "short.mp4", "text": "v"},
                                               {"file_path": "a.png", "text": "a"}, {"file_path": "b.png", "text": "b"}])
    video = ["clip_mode=video", "video_sample_n_frames=5", "video_sample_stride=4"]
    # reduce_stride (the default) can use the clip at a lower stride: not a problem, a notice
    assert main(["data", "check", str(meta), *video]) == 0
    text = capsys.readouterr().out
    assert "[notice] entry 0 short.mp4: too short" in text and "step reduced to 2" in text
    # skip cannot: the same clip is a too_short problem
    assert main(["data", "check", str(meta), *video, "short_video_policy=skip"]) == 1
    assert "[too_short] entry 0 short.mp4" in capsys.readouterr().out
    # train applies the same rule and says what it did
    cfg = write_config(tmp_path / "c.toml", TINY_BASE, root, tmp_path / "out", max_train_steps=1, train_batch_size=1)
    assert main(["train", str(cfg), *video]) == 0
    printed = capsys.readouterr().out
    assert "clip_mode=video: " in printed and "short.mp4: too short" in printed and "step reduced to 2" in printed


def test_stats_prints_a_bucket_table_and_notes_upscaled_samples(tmp_path, capsys):
    meta = make_dataset(tmp_path, n_images=2, n_videos=0)
    assert main(["data", "stats", str(meta), "dataloader_num_workers=0", "image_sample_size=512"]) == 0
    text = capsys.readouterr().out
    assert "{" not in text  # no raw Python dict
    assert "HxW" in text and "batches" in text and "upscaled" in text
    assert "note: 2 samples are smaller than their bucket and will be upscaled" in text


def test_preview_checks_its_folder_and_does_not_replace_an_earlier_preview(tmp_path, capsys):
    meta = make_dataset(tmp_path / "ds", n_images=1, n_videos=0)
    small = ["image_sample_size=32", "video_sample_n_frames=1", "dataloader_num_workers=0"]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["data", "preview", str(meta), "--out", str(blocker / "p"), *small]) == 2
    assert f"--out folder {blocker / 'p'}" in capsys.readouterr().err
    out = tmp_path / "preview"
    assert main(["data", "preview", str(meta), "--out", str(out), *small]) == 0
    capsys.readouterr()
    assert main(["data", "preview", str(meta), "--out", str(out), *small]) == 2
    assert f"--out {out} holds an earlier preview (0000-entry0.png" in capsys.readouterr().err
    assert main(["data", "preview", str(meta), "--out", str(out), "--overwrite", *small]) == 0


# ---- eval, lora, threads, packaging -------------------------------------------------------------


def test_eval_scores_the_readable_videos_and_exits_non_zero_for_a_bad_one(tmp_path, capsys):
    good = write_mp4(tmp_path / "good.mp4", frames=4, size=(32, 32), moving=True)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    assert main(["eval", str(bad), str(good), "--json"]) == 1
    io = capsys.readouterr()
    report = json.loads(io.out)
    assert [r["path"] for r in report["videos"]] == [str(good)]
    assert report["unreadable"][0]["path"] == str(bad) and f"not scored: {bad}" in io.err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["eval", str(good), "--out", str(blocker / "r.json")]) == 2
    assert f"--out folder {blocker} exists and is not a folder" in capsys.readouterr().err


def test_lora_convert_does_not_overwrite_unasked(tiny_model, tmp_path, capsys):
    from test_lora_support import random_lora_file

    lora = random_lora_file(tiny_model, tmp_path / "a.safetensors", rank=2, alpha=2.0, seed=1)
    before = lora.read_bytes()
    assert main(["lora", "convert", str(lora), str(lora), "--to", "peft", "--model", str(tiny_model)]) == 2
    assert f"{lora} already exists; pass --overwrite" in capsys.readouterr().err
    assert lora.read_bytes() == before
    assert main(["lora", "convert", str(lora), str(lora), "--to", "peft", "--model", str(tiny_model), "--overwrite"]) == 0
    assert lora.read_bytes() != before
    both = tmp_path / "both.safetensors"
    both.write_bytes(b"keep")
    assert main(["lora", "combine", f"{lora}:1", "--out", str(both), "--model", str(tiny_model)]) == 2
    assert f"{both} already exists; pass --overwrite" in capsys.readouterr().err and both.read_bytes() == b"keep"
    assert main(["lora", "combine", f"{lora}:1", "--out", str(both), "--model", str(tiny_model), "--overwrite"]) == 0


def test_default_threads_leave_busy_cpus_alone(monkeypatch):
    from ufo_video import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cpus", lambda: 8)
    monkeypatch.setattr(threads, "_chosen", None)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.7, 0.0, 0.0))
    assert threads.default_threads() == 5
    monkeypatch.setattr(os, "getloadavg", lambda: (20.0, 0.0, 0.0))
    assert threads.default_threads() == 5  # measured once per process: runs in one process agree
    monkeypatch.setattr(threads, "_chosen", None)
    assert threads.default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_threads() == 3  # an explicit environment wins
    assert main(["generate", "--threads", "0", "--prompt", "x", "--model", str(TINY_BASE)]) == 2


def test_license_is_an_spdx_string():
    """setuptools deprecates the `license = {text = ...}` table; an SPDX string is the current form."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"


def test_train_ufo_sh_uses_the_projects_venv_by_itself(tmp_path):
    """No activated venv, no PYTHON: the script finds .venv/bin/python beside scripts/."""
    project = tmp_path / "proj"
    (project / "scripts").mkdir(parents=True)
    (project / "scripts" / "train_ufo.sh").write_text((REPO / "scripts" / "train_ufo.sh").read_text())
    (project / ".venv" / "bin").mkdir(parents=True)
    shim = project / ".venv" / "bin" / "python"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src"), "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(project / "scripts" / "train_ufo.sh"), "--rnak=4"], env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2 and "unknown flag --rnak" in result.stderr, result.stderr
    assert "No module named" not in result.stderr


def test_setup_says_what_it_installs_and_is_quiet_when_done(tmp_path):
    """scripts/setup_env.sh (run by demo.sh and test.sh) names each install step and how long a
    first setup takes; a second run with nothing to do prints nothing. pip is a stub here."""
    project = tmp_path / "proj"
    (project / "scripts").mkdir(parents=True)
    for name in ("scripts/setup_env.sh", "pyproject.toml"):
        (project / name).write_text((REPO / name).read_text())
    (project / ".venv" / "bin").mkdir(parents=True)
    stub = project / ".venv" / "bin" / "python"
    stub.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path / "calls.log"}"\n')
    stub.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "PYTHON": sys.executable}
    first = subprocess.run(["bash", "scripts/setup_env.sh"], cwd=project, env=env, capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "setting up .venv (first time: downloads PyTorch" in first.stderr and "minutes" in first.stderr
    assert "[2/3] torch==" in first.stderr and "[3/3] ufo-video" in first.stderr
    assert "-m pip install -q -e .[test,deepspeed]" in (tmp_path / "calls.log").read_text()  # the ZeRO-2 test runs in CI
    second = subprocess.run(["bash", "scripts/setup_env.sh"], cwd=project, env=env, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert second.returncode == 0 and second.stderr == "" and second.stdout == ""


def test_setup_never_installs_a_browser_the_tests_do(tmp_path):
    """A user running only the demo gets no browser: setup_env.sh (shared by demo.sh and test.sh)
    calls no apt-get for chromium even where chromium is missing; test.sh installs it."""
    project = tmp_path / "proj"
    (project / "scripts").mkdir(parents=True)
    for name in ("scripts/setup_env.sh", "pyproject.toml"):
        (project / name).write_text((REPO / name).read_text())
    (project / ".venv" / "bin").mkdir(parents=True)
    stub = project / ".venv" / "bin" / "python"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    bin_dir = tmp_path / "bin"  # a PATH with apt-get (logging) but no chromium / chromedriver
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path / "apt.log"}"\n')
    (bin_dir / "apt-get").chmod(0o755)
    for tool in ("bash", "dirname", "sha256sum", "cut", "cat", "id", "mkdir", "rm", "mktemp", "c++", "env", "echo"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    env = {"PATH": str(bin_dir), "PYTHON": sys.executable}
    result = subprocess.run([str(bin_dir / "bash"), "scripts/setup_env.sh"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "chromium" not in result.stdout + result.stderr
    assert "chromium" not in ((tmp_path / "apt.log").read_text() if (tmp_path / "apt.log").exists() else "")
    assert "chromium-driver" in (REPO / "scripts" / "test.sh").read_text()
