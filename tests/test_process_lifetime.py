"""Process lifetime, tested by killing: no child outlives a killed command or holds its lock,
SIGTERM and SIGINT (also when started with SIGINT ignored) save and say how to resume, and the
UI's training ends with the UI. Processes are found through /proc (Linux)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_train_helpers import losses, lora, make_dataset, max_diff, write_config
from ufo_video.cli import main

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    return env


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a live process, None when it is gone or a zombie (dead, not yet reaped)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return None if state in ("Z", "X") else (state, int(ppid))


def descendants(pid: int) -> set[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))):
            parents.setdefault(st[1], []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 90.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"the command ended before {what} (exit {proc.returncode})"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def assert_all_gone(pids: set[int], within: float = 5.0) -> None:
    deadline = time.time() + within
    while (alive := {p for p in pids if _stat(p)}) and time.time() < deadline:
        time.sleep(0.05)
    assert not alive, f"still alive {within:g} s after their parent was killed: {sorted(alive)}"


def kill_with_live_workers(argv: list[str], ready=lambda: True, workers: int = 1) -> set[int]:
    """Start `argv`, wait until it has `workers` child processes (and `ready()`), kill -9 it;
    returns the children it had, which must all end within 5 s."""
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(descendants(proc.pid)) >= workers and ready(), proc, "live decode workers")
        children = descendants(proc.pid)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert_all_gone(children)
    return children


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds"))


def _train_cmd(cfg: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "ufo_video", "train", str(cfg), *overrides]


def test_kill_9_of_train_with_live_workers_leaves_nothing_and_resumes_at_once(tiny_model, dataset, tmp_path):
    """Twice: kill -9 mid-run (2 decode workers alive), then at once `resume_from_checkpoint=latest`
    is accepted (no orphan holds the folder's lock); the final LoRA equals an uninterrupted run."""
    straight = tmp_path / "straight"
    cfg = write_config(tmp_path / "a.toml", tiny_model, dataset, straight, max_train_steps=4, checkpointing_steps=1)
    assert main(["train", str(cfg)]) == 0

    out = tmp_path / "killed"
    cfg = write_config(tmp_path / "b.toml", tiny_model, dataset, out, max_train_steps=4, checkpointing_steps=1)
    for round_ in range(2):
        first = round_ == 0
        steps_before = len(losses(out)) if not first else 0
        overrides = ["dataloader_num_workers=2", "max_train_steps=1000"] + ([] if first else ["resume_from_checkpoint=latest"])
        kill_with_live_workers(_train_cmd(cfg, *overrides), workers=2,
                               ready=lambda: (out / "losses.jsonl").is_file() and len(losses(out)) > steps_before)
    assert main(["train", str(cfg), "resume_from_checkpoint=latest", "dataloader_num_workers=2"]) == 0
    assert losses(out) == losses(straight)
    assert max_diff(lora(straight / "checkpoint-4.safetensors"), lora(out / "checkpoint-4.safetensors")) <= 1e-6


@pytest.fixture(scope="module")
def many_videos(tmp_path_factory) -> Path:
    """Enough videos that checking and caching them takes a few seconds (workers stay alive)."""
    return make_dataset(tmp_path_factory.mktemp("many"), images=2, videos=40)


def test_kill_9_of_data_check_leaves_no_worker(many_videos):
    meta = many_videos / "metadata.json"
    for _ in range(2):
        kill_with_live_workers([sys.executable, "-m", "ufo_video", "data", "check", str(meta), "--workers", "2"], workers=2)
    assert main(["data", "check", str(meta), "--workers", "2"]) == 0


def test_kill_9_of_data_cache_leaves_no_worker_and_no_lock(tiny_model, many_videos, tmp_path, capsys):
    cfg = write_config(tmp_path / "c.toml", tiny_model, many_videos, tmp_path / "out", max_train_steps=1)
    cache = tmp_path / "cache"
    args = ["cache_latents=true", f"cache_dir={cache}", "dataloader_num_workers=2"]
    for _ in range(2):
        kill_with_live_workers([sys.executable, "-m", "ufo_video", "data", "cache", str(cfg), *args], workers=2)
    capsys.readouterr()
    assert main(["data", "cache", str(cfg), *args]) == 0  # the cache's lock is free at once
    assert "another `ufo-video data cache`" not in capsys.readouterr().err


def test_forked_children_do_not_inherit_held_locks(tmp_path):
    """The mechanism itself: a child forked while a lock is held has no descriptor of it, and a
    refused attempt leaves the holder's note in the file."""
    from ufo_video.process.locks import exclusive_lock

    path = tmp_path / ".lock"
    with exclusive_lock(path, note="pid 1 on host") as fd:
        target = os.readlink(f"/proc/self/fd/{fd}")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: report every descriptor that points at the lock file
            os.close(r)
            mine = [n for n in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{n}") == target]
            os.write(w, json.dumps(mine).encode())
            os._exit(0)
        os.close(w)
        with os.fdopen(r) as pipe:
            assert json.loads(pipe.read()) == []
        os.waitpid(pid, 0)
        lock_probe = subprocess.run([sys.executable, "-c", (
            "import sys; from ufo_video.process.locks import exclusive_lock, LockBusy\n"
            f"try:\n    exclusive_lock({str(path)!r}).__enter__()\nexcept LockBusy as e:\n    print(e.holder); sys.exit(3)")],
            capture_output=True, text=True, timeout=60)  # fmt: skip
        assert lock_probe.returncode == 3 and lock_probe.stdout.strip() == "pid 1 on host"
        assert path.read_text() == "pid 1 on host"  # the refused attempt did not truncate it
    with exclusive_lock(path):  # released: free again
        pass


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what `cmd &` in a script and nohup do


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_saves_prints_the_resume_command_and_resumes_exactly(tiny_model, dataset, tmp_path, signum):
    """SIGTERM, and SIGINT to a trainer started with SIGINT ignored: it finishes the step, saves a
    checkpoint (LoRA + state), prints the resume command, exits 128+signal; the resume equals an
    uninterrupted run."""
    straight = tmp_path / "straight"
    cfg = write_config(tmp_path / "a.toml", tiny_model, dataset, straight, max_train_steps=6, checkpointing_steps=100)
    assert main(["train", str(cfg)]) == 0

    out = tmp_path / "stopped"
    cfg = write_config(tmp_path / "b.toml", tiny_model, dataset, out, max_train_steps=6, checkpointing_steps=100)
    proc = subprocess.Popen(_train_cmd(cfg, "dataloader_num_workers=2"), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=_ignore_sigint)  # fmt: skip
    try:
        wait_for(lambda: (out / "losses.jsonl").is_file() and losses(out), proc, "step 1")
        children = descendants(proc.pid)
        proc.send_signal(signum)
        proc.send_signal(signum)  # a second signal while it saves changes nothing
        text, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, text[-3000:]
    assert_all_gone(children)
    step = losses(out)[-1][0]
    assert step < 6 and (out / f"checkpoint-{step}.safetensors").is_file() and (out / f"checkpoint-{step}" / "COMPLETE").is_file()
    assert f"interrupted at step {step} ({signal.Signals(signum).name})" in text
    resume = next(line for line in text.splitlines() if line.startswith("resume with: "))
    assert "resume_from_checkpoint=latest" in resume and str(cfg) in resume
    assert "Traceback" not in text
    assert main(["train", str(cfg), "resume_from_checkpoint=latest"]) == 0
    assert losses(out) == losses(straight)
    assert max_diff(lora(straight / "checkpoint-6.safetensors"), lora(out / "checkpoint-6.safetensors")) <= 1e-6


def test_sigterm_to_generate_leaves_no_partial_output(tmp_path):
    """generate stops on SIGTERM with 143 and no temporary or half-written file in the folder."""
    from test_sweep_cli import TINY_BASE

    out = tmp_path / "gen"
    out.mkdir()
    log = tmp_path / "log.txt"
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "ufo_video", "generate", "--model", str(TINY_BASE), "--prompt",
                                 "x", "--video-length", "9", "--sample-size", "64", "64", "--steps", "400", "--dtype",
                                 "fp32", "--out", str(out / "v.mp4")], env=_env(), stdout=sink, stderr=sink)  # fmt: skip
    try:  # stopped while denoising
        wait_for(lambda: " 1/400" in log.read_text(), proc, "the first denoising step")
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert proc.returncode == 143, text[-2000:]
    assert "interrupted (SIGTERM)" in text and "Traceback" not in text
    assert list(out.iterdir()) == []


def _ui(tmp_path: Path, port: int) -> subprocess.Popen:
    from test_sweep_cli import TINY_BASE

    return subprocess.Popen([sys.executable, "-m", "ufo_video", "ui", "--model", str(TINY_BASE), "--port", str(port),
                             "--out", str(tmp_path / "ui-out"), "--allow-dir", str(tmp_path.parent), "--allow-dir",
                             str(Path(__file__).resolve().parent.parent)], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=_ignore_sigint)  # fmt: skip


def _client(port: int, proc: subprocess.Popen):
    import gradio_client

    deadline = time.time() + 120
    while True:
        try:
            return gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        except Exception:  # not listening yet
            assert proc.poll() is None and time.time() < deadline, "the UI did not start"
            time.sleep(0.5)


def test_ui_started_with_sigint_ignored_stops_a_training_and_its_death_ends_the_next(tiny_model, dataset, tmp_path):
    from test_ui import free_port

    port = free_port()
    ui = _ui(tmp_path, port)
    try:
        client = _client(port, ui)
        out = tmp_path / "run"
        cfg = write_config(tmp_path / "t.toml", tiny_model, dataset, out, max_train_steps=10000,
                           checkpointing_steps=10000, save_state=True)  # fmt: skip
        client.predict(str(cfg), "dataloader_num_workers=1", api_name="/train_start")
        wait_for(lambda: (out / "losses.jsonl").is_file() and losses(out), ui, "the UI's training to take a step", 120)
        said = client.predict(api_name="/train_stop")
        deadline = time.time() + 60
        while "stopped (exit status 143)" not in said:  # Stop answers once the trainer exited (or says it is saving)
            assert time.time() < deadline, said
            time.sleep(0.5)
            said = client.predict(str(out), api_name="/train_watch")[0]
        step = losses(out)[-1][0]
        assert f"newest checkpoint: step {step}" in said and (out / f"checkpoint-{step}" / "COMPLETE").is_file()

        # a second training, then the UI is killed: the trainer stops by itself and saves
        client.predict(str(cfg), "resume_from_checkpoint=latest dataloader_num_workers=1", api_name="/train_start")
        wait_for(lambda: losses(out)[-1][0] > step, ui, "the resumed training to take a step", 120)
        family = descendants(ui.pid)
        assert family, "the UI has no training subprocess"
    finally:
        os.kill(ui.pid, signal.SIGKILL)
        ui.wait()
    assert_all_gone(family, within=30)  # within one step and its checkpoint
    last = losses(out)[-1][0]
    assert (out / f"checkpoint-{last}" / "COMPLETE").is_file()
    assert main(["train", str(cfg), "resume_from_checkpoint=latest", "max_train_steps=" + str(last + 1)]) == 0
