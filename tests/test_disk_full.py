"""A full disk is one `error:` line naming the file and what was kept, exit code 2, no traceback,
nothing earlier lost, and the command works again once space is freed.

The disk is a small tmpfs mounted for the test (skipped where mounting is not permitted), filled
to the brim with a filler file; where the disk must fill at an exact moment (after a checkpoint,
after the denoise) the filler is written from inside the run. A failure no tmpfs can place (the
state folder half written) is injected by making its writer raise what safetensors raises.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from safetensors import SafetensorError
from safetensors.torch import load_file

from test_train_helpers import losses, make_dataset, write_config
from ufo_video.cli import main
from ufo_video.train import checkpoint as ckpt
from ufo_video.train import loop as loop_module

ENOSPC_SAFETENSORS = "Error while serializing: I/O error: No space left on device (os error 28)"


@pytest.fixture
def small_disk(tmp_path):
    """`small_disk(size)`: a fresh tmpfs of that size (e.g. "8m"), unmounted after the test."""
    mounted: list[Path] = []

    def mount(size: str, options: str = "") -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs", str(where)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs for a full disk ({done.stderr.strip()}); these tests need root")
        mounted.append(where)
        return where

    yield mount
    gc.collect()  # a writer cut off by the full disk may hold its (deleted) file until collected
    for where in reversed(mounted):
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)  # still busy: detach it anyway


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill `disk` to the brim with `disk/filler`, then give back `leave` bytes (whole pages)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 20, 1 << 12, 1):
            block = b"\xff" * size
            while True:
                try:
                    if os.write(fd, block) < size:
                        break
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
        if leave:
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)
    assert shutil.disk_usage(disk).free <= leave
    return filler


def one_error_line(capsys, path: Path | str, absent: tuple[str, ...] = ()) -> str:
    captured = capsys.readouterr()
    text = captured.out + captured.err
    for word in ("Traceback", "Exception in thread", *absent):
        assert word not in text, text
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, captured.err
    assert str(path) in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds"))


# ---- training: checkpoints and losses.jsonl -----------------------------------------------------


def _train_until_full(monkeypatch, at_call: int, disk: Path) -> None:
    """Fill `disk` at the `at_call`-th micro-batch (after the checkpoint of step 2)."""
    real, calls = loop_module.batch_loss, []

    def filling(*args):
        calls.append(1)
        if len(calls) == at_call:
            fill(disk)
        return real(*args)

    monkeypatch.setattr(loop_module, "batch_loss", filling)


def _resume_completes(cfg: Path, out: Path, monkeypatch, capsys) -> None:
    monkeypatch.undo()
    (out.parent / "filler").unlink()
    assert main(["train", str(cfg), "resume_from_checkpoint=latest"]) == 0
    text = capsys.readouterr().out
    assert "resumed from" in text and "checkpoint-2" in text and "training finished: 4 steps" in text
    assert [s for s, _ in losses(out)] == [1, 2, 3, 4]
    assert ckpt.latest_state(out) == out / "checkpoint-4"
    assert load_file(str(out / "checkpoint-4.safetensors"))


def _checkpoint_2_intact(out: Path) -> None:
    assert ckpt.latest_state(out) == out / "checkpoint-2"
    state = ckpt.read_state(out / "checkpoint-2", 0)  # loadable as resume loads it
    assert state["progress"].step == 2
    assert load_file(str(out / "checkpoint-2.safetensors"))
    assert not list(out.glob(".tmp-checkpoint-*")) and not (out / "checkpoint-4").exists()


def test_train_lora_file_on_a_full_disk_keeps_the_last_checkpoint_and_resumes(
        tiny_model, dataset, small_disk, tmp_path, monkeypatch, capsys):  # fmt: skip
    disk = small_disk("8m")
    out = disk / "out"
    cfg = write_config(tmp_path / "c.toml", tiny_model, dataset, out)  # 4 steps, checkpoints at 2 and 4
    _train_until_full(monkeypatch, at_call=3, disk=disk)  # step 3: the disk fills
    assert main(["train", str(cfg)]) == 2
    line = one_error_line(capsys, out / "checkpoint-4.safetensors")
    assert line == (f"error: no space left on device while writing {out / 'checkpoint-4.safetensors'}; nothing was "
                    "replaced: the newest complete checkpoint (checkpoint-2) is kept; free space and rerun with "
                    "resume_from_checkpoint=latest")  # fmt: skip
    _checkpoint_2_intact(out)
    assert not (out / "checkpoint-4.safetensors").exists()
    _resume_completes(cfg, out, monkeypatch, capsys)


@pytest.mark.parametrize("writer", ["lora.safetensors", "COMPLETE"])
def test_train_state_folder_cut_off_leaves_no_half_checkpoint(tiny_model, dataset, small_disk, tmp_path, monkeypatch,
                                                               capsys, writer):  # fmt: skip
    """The LoRA file of step 4 is written, then its state folder fails: both go, checkpoint-2 stays
    the one resume picks."""
    disk = small_disk("8m")
    out = disk / "out"
    cfg = write_config(tmp_path / "c.toml", tiny_model, dataset, out)
    if writer == "lora.safetensors":  # what safetensors raises (not an OSError), from its Rust writer

        def full(*args, **kwargs):
            raise SafetensorError(ENOSPC_SAFETENSORS)

        real_save = ckpt.save_file
        monkeypatch.setattr(ckpt, "save_file", lambda t, p, *a, **k: (full if "checkpoint-4" in p else real_save)(t, p, *a, **k))
    else:  # the marker, written last: an OSError without a file name
        real_finish = ckpt.finish_state

        def finish(tmp, output_dir, step):
            if step == 4:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_finish(tmp, output_dir, step)

        monkeypatch.setattr(ckpt, "finish_state", finish)
    assert main(["train", str(cfg)]) == 2
    line = one_error_line(capsys, out / "checkpoint-4")
    assert "the newest complete checkpoint (checkpoint-2) is kept" in line
    _checkpoint_2_intact(out)
    assert not (out / "checkpoint-4.safetensors").exists()  # the LoRA of the failed save goes with it
    (disk / "filler").write_bytes(b"")  # `_resume_completes` frees the "disk"
    _resume_completes(cfg, out, monkeypatch, capsys)


def test_train_loss_line_on_a_full_disk_is_not_half_written(tiny_model, dataset, small_disk, tmp_path, monkeypatch,
                                                            capsys):  # fmt: skip
    disk = small_disk("8m")
    out = disk / "out"
    cfg = write_config(tmp_path / "c.toml", tiny_model, dataset, out)
    real_write = os.write

    def write(fd, data):  # the loss line of step 3 hits a full disk after 4 bytes
        if os.readlink(f"/proc/self/fd/{fd}").endswith("losses.jsonl") and b'"step": 3' in data:
            real_write(fd, data[:4])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    assert main(["train", str(cfg)]) == 2
    line = one_error_line(capsys, out / "losses.jsonl")
    assert "the loss of step 3 was not logged, the log is whole up to step 2" in line
    assert "the newest complete checkpoint (checkpoint-2) is kept" in line
    assert (out / "losses.jsonl").read_text().endswith("}\n") and [s for s, _ in losses(out)] == [1, 2]
    _checkpoint_2_intact(out)
    (disk / "filler").write_bytes(b"")
    _resume_completes(cfg, out, monkeypatch, capsys)


def test_tensorboard_on_a_full_disk_warns_once_and_training_goes_on(tiny_model, dataset, small_disk, tmp_path,
                                                                    capsys):  # fmt: skip
    """TensorBoard's folder on its own (full) disk: one warning, the run finishes, losses.jsonl whole."""
    from ufo_video.train import tensorboard_log

    disk = small_disk("64k")
    out = tmp_path / "out"
    # 24 steps: their scalars (~5.5 kB) outgrow the event file's first page, which is all a full tmpfs has
    cfg = write_config(tmp_path / "c.toml", tiny_model, dataset, out, report_to="tensorboard", max_train_steps=24,
                       checkpointing_steps=24, save_state=False, logging_dir=str(disk / "tb"))  # fmt: skip
    guarded = []
    real_guard = tensorboard_log.guard

    def guard(tracker, log=print):
        guarded.append(real_guard(tracker, log))
        fill(disk)  # after the start (the hparams written): every later event hits a full disk
        return guarded[-1]

    tensorboard_log.guard, saved = guard, tensorboard_log.guard
    try:
        assert main(["train", str(cfg)]) == 0
    finally:
        tensorboard_log.guard = saved
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert guarded == [True], "TensorBoard's writer changed shape: the full-disk guard is not installed"
    assert "Traceback" not in text and "Exception in thread" not in text, text
    warnings = [line for line in text.splitlines() if "logging to TensorBoard stopped" in line]
    assert len(warnings) == 1 and str(disk / "tb") in warnings[0] and warnings[0].startswith("warning: no space left")
    assert "training finished: 24 steps" in text and [s for s, _ in losses(out)] == list(range(1, 25))


def test_tensorboard_writer_thread_on_a_full_disk(small_disk, capsys):
    """The writer thread itself hits the full disk (it flushes after every event here): one
    warning, no thread traceback, later events and the close raise nothing."""
    from torch.utils.tensorboard import SummaryWriter

    from ufo_video.train import tensorboard_log

    disk = small_disk("64k")
    tracker = type("Tracker", (), {})()
    tracker.writer = SummaryWriter(str(disk / "tb"), flush_secs=0)
    assert tensorboard_log.guard(tracker)
    fill(disk)
    for step in range(200):  # ~13 kB of events
        tracker.writer.add_scalar("loss", 0.5, step)
    tracker.writer.flush()
    tracker.writer.close()
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Exception in thread" not in captured.err, captured.err
    warnings = [line for line in captured.out.splitlines() if "logging to TensorBoard stopped" in line]
    assert warnings == [f"warning: no space left on device while writing the TensorBoard log in {disk / 'tb'}; "
                        "logging to TensorBoard stopped, training goes on (losses.jsonl still records every step)"]


# ---- losses.jsonl: whole lines, tolerant readers -------------------------------------------------


def test_loss_append_is_cut_back_when_the_write_fails(tmp_path, monkeypatch):
    from ufo_video.atomic import DiskFullError
    from ufo_video.train import loss_log

    path = tmp_path / "losses.jsonl"
    loss_log.append(path, 1, 0.5, 1e-4)
    before = path.read_bytes()
    real_write = os.write

    def short(fd, data):  # a full disk: part of the line goes in, then no more
        return real_write(fd, data[:7])

    monkeypatch.setattr(os, "write", short)
    with pytest.raises(DiskFullError, match=f"no space left on device while writing {path}; the loss of step 2"):
        loss_log.append(path, 2, 0.25, 1e-4)
    monkeypatch.setattr(os, "write", real_write)
    assert path.read_bytes() == before
    loss_log.append(path, 2, 0.25, 1e-4)
    assert [r["step"] for r in loss_log.read_records(path)] == [1, 2]


def test_loss_append_on_a_full_tmpfs_keeps_the_file_whole(small_disk):
    from ufo_video.atomic import DiskFullError
    from ufo_video.train import loss_log

    disk = small_disk("64k")
    path = disk / "losses.jsonl"
    line = json.dumps({"step": 1, "loss": 0.5, "lr": 0.0001}) + "\n"
    path.write_text(line * (4096 // len(line)))  # the next line needs a new page
    before = path.read_bytes()
    fill(disk)
    with pytest.raises(DiskFullError):
        loss_log.append(path, 2, 0.25, 1e-4)
    assert path.read_bytes() == before


def test_resume_drops_a_partial_last_line_with_a_notice(tmp_path, capsys):
    from ufo_video.train.saving import trim_loss_log

    path = tmp_path / "losses.jsonl"
    path.write_text('{"step": 1, "loss": 0.5, "lr": 0.1}\n{"step": 2, "loss": 0.4, "lr": 0.1}\n{"st')
    trim_loss_log(path, 2)
    assert f"notice: {path}: dropped its incomplete last line 3" in capsys.readouterr().out
    assert path.read_text() == '{"step": 1, "loss": 0.5, "lr": 0.1}\n{"step": 2, "loss": 0.4, "lr": 0.1}\n'
    trim_loss_log(path, 1)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1]


def test_a_corrupt_line_before_the_last_is_an_error_naming_it(tmp_path):
    from ufo_video.train.loss_log import LossLogError, read_records

    path = tmp_path / "losses.jsonl"
    path.write_text('{"step": 1, "loss": 0.5}\n{"st\n{"step": 3, "loss": 0.4}\n')
    with pytest.raises(LossLogError, match=f"{path}: line 2 is not a loss record"):
        read_records(path)
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo\n\n')  # blank lines after a cut-off one
    assert [r["step"] for r in read_records(path, notice=None)] == [1]


def test_resume_over_a_half_line_left_by_an_old_run(tiny_model, dataset, tmp_path, capsys):
    """The stuck folder of the issue: `{"st` at the end of losses.jsonl, then resume=latest."""
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", tiny_model, dataset, out, max_train_steps=2)
    assert main(["train", str(cfg)]) == 0
    with (out / "losses.jsonl").open("a") as fh:
        fh.write('{"st')
    assert main(["train", str(cfg), "max_train_steps=3", "resume_from_checkpoint=latest"]) == 0
    assert "dropped its incomplete last line 3" in capsys.readouterr().out
    assert [s for s, _ in losses(out)] == [1, 2, 3]


# ---- generate, data cache, data preview, lora convert / combine ------------------------------------

TINY = ["--sample-size", "64", "64", "--video-length", "9", "--steps", "2", "--prompt", "a ball", "--device", "cpu"]


def test_generate_refuses_before_loading_when_the_video_cannot_fit(tiny_model, small_disk, capsys):
    disk = small_disk("1m")
    fill(disk, leave=8192)
    assert main(["generate", "--model", str(tiny_model), *TINY, "--out", str(disk / "v.mp4")]) == 2
    line = one_error_line(capsys, disk, absent=("loading",))  # refused before the model loads
    assert "not enough free disk for 1 video(s) of 9 frames 64x64 as mp4 with sidecar (estimate)" in line
    assert "needs ~" in line and "8,192 bytes free" in line
    assert not (disk / "v.mp4").exists()


def test_generate_write_on_a_full_disk_keeps_the_old_file(tiny_model, small_disk, monkeypatch, capsys):
    from ufo_video.infer.engine import VideoGenerator

    disk = small_disk("1m")
    video = disk / "v.mp4"
    video.write_bytes(b"the earlier video")
    real = VideoGenerator.generate

    def generate_then_fill(self, request):
        frames = real(self, request)
        fill(disk)  # the disk fills during the denoise
        return frames

    monkeypatch.setattr(VideoGenerator, "generate", generate_then_fill)
    assert main(["generate", "--model", str(tiny_model), *TINY, "--out", str(video), "--overwrite"]) == 2
    line = one_error_line(capsys, video)
    assert line == f"error: no space left on device while writing {video}; nothing was replaced; free space and run again"
    assert video.read_bytes() == b"the earlier video" and sorted(p.name for p in disk.iterdir()) == ["filler", "v.mp4"]
    monkeypatch.undo()
    (disk / "filler").unlink()
    assert main(["generate", "--model", str(tiny_model), *TINY, "--out", str(video), "--overwrite"]) == 0
    assert video.stat().st_size > 100 and video.with_suffix(".json").is_file()


def test_data_cache_on_a_full_disk_keeps_the_cache_and_reruns(tiny_model, small_disk, tmp_path, capsys):
    from test_data_cache import _cfg, _dataset

    from ufo_video.config import config_to_toml
    from ufo_video.data.cache_store import CacheStore
    from ufo_video.data.cache_keys import CACHE_FORMAT  # noqa: F401  (the index names its format)
    from test_data_fixtures import write_image

    disk = small_disk("4m")
    data = tmp_path / "data"
    meta = _dataset(data)
    config = tmp_path / "train.toml"
    config.write_text(config_to_toml(_cfg(tiny_model, data, meta, cache_dir=str(disk / "cache"))))
    assert main(["data", "cache", str(config)]) == 0
    before = dict(CacheStore(disk / "cache", writable=False).items)
    records = json.loads(meta.read_text())
    write_image(data / "new.png", size=(32, 32), color=(1, 2, 3))
    meta.write_text(json.dumps([*records, {"file_path": "new.png", "text": "a new image"}]))
    capsys.readouterr()
    fill(disk)
    assert main(["data", "cache", str(config)]) == 2
    line = one_error_line(capsys, disk / "cache")
    assert line.startswith("error: no space left on device while writing ") and "keeps every shard written before" in line
    after = CacheStore(disk / "cache", writable=False).items
    assert {k: after[k] for k in before} == before  # everything cached before is still indexed
    (disk / "filler").unlink()
    assert main(["data", "cache", str(config)]) == 0
    assert "encoded now" in capsys.readouterr().out
    assert len(CacheStore(disk / "cache", writable=False).items) > len(before)


def test_data_preview_on_a_full_disk_keeps_the_clips_before(small_disk, tmp_path, monkeypatch, capsys):
    from test_data_fixtures import make_dataset as make_small

    from ufo_video import media_write

    disk = small_disk("1m")
    meta = make_small(tmp_path / "ds", n_images=2, n_videos=1)
    out = disk / "preview"
    real, calls = media_write.write_video, []

    def write_then_fill(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            fill(disk)
        return real(*args, **kwargs)

    monkeypatch.setattr(media_write, "write_video", write_then_fill)
    args = ["data", "preview", str(meta), "--out", str(out), "--n", "3", "image_sample_size=32",
            "video_sample_size=32", "video_sample_n_frames=5", "dataloader_num_workers=0"]  # fmt: skip
    assert main(args) == 2
    line = one_error_line(capsys, out / "0001-entry")
    assert f"the 1 clip(s) before it are complete in {out}; free space and run again with --overwrite" in line
    assert len(list(out.glob("0000-entry*.mp4"))) == 1 and not list(out.glob("0001-*"))
    monkeypatch.undo()
    (disk / "filler").unlink()
    assert main([*args, "--overwrite"]) == 0
    assert len(list(out.glob("*.mp4"))) == 3


@pytest.fixture(scope="module")
def loras(tiny_models, tmp_path_factory) -> dict[str, Path]:
    from test_lora_support import random_lora_file

    root = tmp_path_factory.mktemp("disk-loras")
    model = tiny_models["diffusers"]
    return {"a": random_lora_file(model, root / "a.safetensors", rank=4, alpha=2.0, seed=1),
            "b": random_lora_file(model, root / "b.safetensors", rank=4, alpha=2.0, seed=2)}  # fmt: skip


@pytest.mark.parametrize("command", ["convert", "combine"])
def test_lora_tools_on_a_full_disk_keep_the_old_file(tiny_model, loras, small_disk, capsys, command):
    disk = small_disk("1m")
    dst = disk / "out.safetensors"
    dst.write_bytes(b"an earlier file")
    args = (["lora", "convert", str(loras["a"]), str(dst), "--to", "peft"] if command == "convert" else
            ["lora", "combine", str(loras["a"]), str(loras["b"]), "--out", str(dst), "--model", str(tiny_model)])
    fill(disk, leave=8192)  # room for the folder check, not for the ~50 kB LoRA
    assert main([*args, "--overwrite"]) == 2
    line = one_error_line(capsys, dst)
    assert line == f"error: no space left on device while writing {dst}; nothing was replaced; free space and run again"
    assert dst.read_bytes() == b"an earlier file" and sorted(p.name for p in disk.iterdir()) == ["filler", "out.safetensors"]
    (disk / "filler").unlink()
    assert main([*args, "--overwrite"]) == 0
    assert load_file(str(dst))


def test_a_read_only_disk_is_one_line_too(loras, small_disk, capsys):
    disk = small_disk("64k", ",ro")
    assert main(["lora", "convert", str(loras["a"]), str(disk / "out.safetensors"), "--to", "peft"]) == 2
    line = one_error_line(capsys, disk)
    assert line == (f"error: read-only file system while writing {disk}; nothing was written yet; make the disk "
                    "writable (or write elsewhere) and run again")  # fmt: skip


def test_any_other_write_of_a_run_names_the_checkpoint_it_keeps(tmp_path):
    """A validation clip or the report on a full disk: the message still says what resume picks up."""
    from ufo_video.atomic import DiskFullError
    from ufo_video.train.saving import checkpoints_named_on_full_disk

    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / ckpt.MARKER).write_text("ok\n")
    clip = tmp_path / "samples" / "step-000004.mp4"
    with pytest.raises(DiskFullError) as caught, checkpoints_named_on_full_disk(tmp_path):
        raise DiskFullError(clip, errno.ENOSPC)
    assert str(caught.value) == (f"no space left on device while writing {clip}; nothing was replaced: the newest "
                                 "complete checkpoint (checkpoint-2) is kept; free space and rerun with "
                                 "resume_from_checkpoint=latest")  # fmt: skip
