"""An output folder belongs to one run; nothing a run made is lost (through `ufo-video train`)."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_train_helpers import losses, make_dataset, write_config
from ufo_video.cli import main
from ufo_video.train.output_lock import LOCK_NAME, claim_output_dir


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds"))


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parent.parent / "src")
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
                PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))  # fmt: skip


def test_a_folder_in_use_by_another_run_is_refused(tiny_model, dataset, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", tiny_model, dataset, out, max_train_steps=1)
    with claim_output_dir(out, resuming=False, start_over=False):
        assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"output folder {out} is in use by another training run (pid {os.getpid()}" in err
    assert not (out / "losses.jsonl").exists()
    assert main(["train", str(cfg)]) == 0  # released when the holder ends


def test_a_killed_run_does_not_leave_the_folder_locked(tiny_model, dataset, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from ufo_video.train.output_lock import claim_output_dir\n"
         "with claim_output_dir(Path(sys.argv[1]), resuming=False, start_over=False):\n"
         "    print('held', flush=True); time.sleep(120)", str(out)],
        env=_env(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    assert (out / LOCK_NAME).exists()
    cfg = write_config(tmp_path / "c.toml", tiny_model, dataset, out, max_train_steps=1)
    assert main(["train", str(cfg)]) == 0


def test_a_fresh_run_into_a_used_folder_is_refused_unless_resuming_or_starting_over(tiny_model, dataset, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", tiny_model, dataset, out, max_train_steps=2, checkpointing_steps=1)
    assert main(["train", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["train", str(cfg), "max_train_steps=3"]) == 2
    err = capsys.readouterr().err
    assert "holds another run's outputs (checkpoint-1" in err
    assert "resume_from_checkpoint=latest" in err and "overwrite_output_dir=true" in err
    assert [s for s, _ in losses(out)] == [1, 2]  # untouched
    # resuming with the same settings: no "different settings" warning
    assert main(["train", str(cfg), "resume_from_checkpoint=latest"]) == 0
    text = capsys.readouterr().out
    assert "resumed from" in text and "note:" not in text
    # a real difference is named
    assert main(["train", str(cfg), "resume_from_checkpoint=latest", "max_train_steps=3", "learning_rate=2e-4"]) == 0
    text = capsys.readouterr().out
    assert "changed settings: train.learning_rate: 0.0001 -> 0.0002; train.max_train_steps: 2 -> 3" in text
    # start over: the old run's outputs go, the new run's steps start at 1
    assert main(["train", str(cfg), "overwrite_output_dir=true", "max_train_steps=1"]) == 0
    text = capsys.readouterr().out
    assert "overwrite_output_dir: removed the previous run's" in text
    assert [s for s, _ in losses(out)] == [1]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-1.safetensors"]


def test_an_unwritable_output_folder_fails_before_loading_and_names_it(tiny_model, dataset, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cfg = write_config(tmp_path / "c.toml", tiny_model, dataset, blocker / "out", max_train_steps=1)
    assert main(["train", str(cfg)]) == 2
    assert f"output folder {blocker / 'out'} is not writable" in capsys.readouterr().err
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        cfg = write_config(tmp_path / "d.toml", tiny_model, dataset, ro / "out", max_train_steps=1)
        assert main(["train", str(cfg)]) == 2
        assert f"output folder {ro / 'out'} is not writable" in capsys.readouterr().err


def test_start_summary_checkpoint_lines_and_html_report(tiny_model, dataset, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", tiny_model, dataset, out, max_train_steps=2, checkpointing_steps=1)
    assert main(["train", str(cfg), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "training 2 steps" in text and "data: 6 samples (4 images, 2 videos)" in text
    assert "buckets (HxWxframes x batches): " in text and "trainable parameters" in text
    assert "device: cpu (1 process(es), 1 CPU thread(s))" in text and f"output: {out}" in text
    assert "training 2 steps of 2 sample(s) (batch 2 per process x 1 process x 1 accumulation step)" in text
    # one size per checkpoint, printed once, in a unit that fits (a few hundred KB here, not "0.2 MB" / "0.0 MB")
    sizes = re.findall(r"each ~([0-9.]+ [KMGT]?B)", text)
    assert len(sizes) == 1 and sizes[0].endswith(" KB"), text
    assert len(re.findall(r"\bfree\b", text)) == 1 and "0.0 MB" not in text
    assert "saved checkpoint-1.safetensors + checkpoint-1/ (step 1, loss " in text
    assert "saved checkpoint-2.safetensors + checkpoint-2/ (step 2, loss " in text
    html = (out / "train-report.html").read_text()
    assert "<svg" in html and "training loss" in html and "learning rate" in html
    assert "checkpoint-2.safetensors" in html and "s_per_step" in html


def test_ctrl_c_is_one_clean_line_and_the_exact_resume_command(tiny_model, dataset, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", tiny_model, dataset, out, max_train_steps=3, checkpointing_steps=1,
                       )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ufo_video", "train", str(cfg), "max_train_steps=1000", "dataloader_num_workers=2"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 120
    try:
        while not (out / "checkpoint-1" / "COMPLETE").exists():
            assert proc.poll() is None and time.time() < deadline, "trainer ended or hung before step 1"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stdout + stderr
    assert "interrupted at step" in stdout
    expected = shlex.join(["ufo-video", "train", str(cfg), "max_train_steps=1000", "dataloader_num_workers=2",
                           "resume_from_checkpoint=latest"])  # fmt: skip
    assert f"resume with: {expected}" in stdout
    # the printed command resumes (here to fewer steps, which the note names)
    args = shlex.split(expected)[1:]
    args = [a if a != "max_train_steps=1000" else "max_train_steps=3" for a in args]
    capsys.readouterr()
    assert main(args) == 0
    assert "resumed from" in capsys.readouterr().out


def test_report_maths_by_hand():
    from ufo_video.train.report import smooth

    # weight 0.5: averages 0.5 and 1.25, bias-corrected by 1-0.5 and 1-0.25
    assert smooth([1.0, 2.0], 0.5) == pytest.approx([1.0, 1.25 / 0.75])
    assert smooth([3.0, float("nan"), 3.0], 0.9)[0] == pytest.approx(3.0)


@pytest.mark.parametrize("order", ["options first", "options last"])
def test_train_takes_options_between_and_after_the_overrides(tiny_model, dataset, tmp_path, capsys, order):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", tiny_model, dataset, out)
    words = ["--threads", "1", "max_train_steps=1"]
    if order == "options last":
        words = words[2:] + words[:2]
    assert main(["train", str(cfg), *words]) == 0
    text = capsys.readouterr().out
    assert "training 1 steps" in text and "1 CPU thread(s)" in text
    assert [s for s, _ in losses(out)] == [1]


def _dataset_with_missing(root: Path, missing: int) -> Path:
    make_dataset(root, images=4, videos=0)
    meta = json.loads((root / "metadata.json").read_text())
    meta += [{"file_path": f"train/gone{i}.png", "text": "x", "type": "image"} for i in range(missing)]
    (root / "metadata.json").write_text(json.dumps(meta))
    return root


def _skip_lines(caplog) -> list[str]:
    """The data layer's warnings (printed on stderr by logging's default handler outside pytest)."""
    return [r.getMessage() for r in caplog.records if r.name == "ufo_video.data"]


def test_a_missing_file_is_reported_once_per_run_not_per_epoch(tiny_model, tmp_path, capsys, caplog):
    data = _dataset_with_missing(tmp_path / "ds", 1)
    out = tmp_path / "out"
    # 4 images in batches of 2: 2 batches per epoch, so 5 steps read 3 epochs
    cfg = write_config(tmp_path / "c.toml", tiny_model, data, out, max_train_steps=5, checkpointing_steps=5)
    with caplog.at_level(logging.WARNING, logger="ufo_video.data"):
        assert main(["train", str(cfg), "max_failed_fraction=0.5"]) == 0
    assert [line for line in _skip_lines(caplog) if "gone0.png" in line] == [
        f"data: skipping {data / 'train' / 'gone0.png'}: No such file or directory"]
    assert "training finished: 5 steps" in capsys.readouterr().out
    assert (out / "skipped-files.txt").read_text() == f"{data / 'train' / 'gone0.png'}: No such file or directory\n"


def test_thousands_of_missing_files_print_a_few_lines_then_the_refusal(tiny_model, tmp_path, capsys, caplog):
    data = _dataset_with_missing(tmp_path / "ds", 2000)
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", tiny_model, data, out, max_train_steps=1)
    with caplog.at_level(logging.WARNING, logger="ufo_video.data"):
        assert main(["train", str(cfg)]) == 2
    lines = _skip_lines(caplog)
    assert len(lines) == 6 and all(line.startswith("data: skipping ") for line in lines[:5])
    listed = out / "skipped-files.txt"
    assert lines[5] == (f"data: ... and 1995 more (1995 x No such file or directory); all listed in {listed}; "
                        "further skipped files are not printed")
    assert len(listed.read_text().splitlines()) == 2000
    captured = capsys.readouterr()
    assert "2000 of 2004 samples failed their header check" in captured.err
    assert len((captured.out + captured.err).splitlines()) < 10
