"""A training output_dir, read while it runs or after; and one training run as a subprocess.

Reading never writes into the run's folder: losses.jsonl (a last line still being written is
skipped), `checkpoint-N.safetensors` LoRAs and `checkpoint-N/` states, `samples/*.mp4`.

`TrainJob` runs `python -m ufo_video train CONFIG key=value...` with its output in a log file.
`stop()` sends SIGTERM to the trainer process alone: the trainer finishes its step, saves a
checkpoint and exits (its handlers are installed explicitly, so this works however the UI was
started, e.g. with SIGINT ignored by `cmd &` in a script). The trainer watches the UI process
(`process.children`): if the UI dies, even by `kill -9`, the trainer stops the same way.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ufo_video.errors import UfoError
from ufo_video.process.children import child_env

_CKPT = re.compile(r"^checkpoint-(\d+)(\.safetensors)?$")


@dataclass
class LossLog:
    steps: list[int]
    losses: list[float]
    lrs: list[float]


def read_losses(output_dir: Path) -> LossLog:
    from ufo_video.train.loss_log import read_records

    log = LossLog([], [], [])
    # notice=None: a last line may be being written while the UI reads; a corrupt line before it
    # is an error (LossLogError) the tab shows
    for rec in read_records(output_dir / "losses.jsonl", notice=None):
        step = int(rec["step"])
        try:
            loss, lr = float(rec["loss"]), float(rec.get("lr", math.nan))
        except (ValueError, TypeError):
            loss, lr = math.nan, math.nan  # a non-finite loss written as text ("nan") parses; anything else is no number
        log.steps.append(step)
        log.losses.append(loss)
        log.lrs.append(lr)
    return log


def smoothed(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard's smoothing)."""
    out, avg, n = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(out[-1] if out else v)
            continue
        n += 1
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**n))
    return out


def checkpoints(output_dir: Path) -> list[list]:
    """[step, LoRA file, MB, full state saved, age] per step, oldest step first."""
    found: dict[int, dict] = {}
    if output_dir.is_dir():
        for entry in output_dir.iterdir():
            m = _CKPT.match(entry.name)
            if not m:
                continue
            rec = found.setdefault(int(m[1]), {"file": "", "mb": 0.0, "state": "no", "mtime": 0.0})
            if entry.is_file():
                rec.update(file=entry.name, mb=round(entry.stat().st_size / 2**20, 2))
            else:
                rec["state"] = "yes"
            rec["mtime"] = max(rec["mtime"], entry.stat().st_mtime)
    now = time.time()
    return [[step, r["file"], r["mb"], r["state"], f"{(now - r['mtime']) / 60:.1f} min ago"] for step, r in sorted(found.items())]


def samples(output_dir: Path, limit: int = 12) -> list[Path]:
    """Validation clips, newest step first."""
    folder = output_dir / "samples"
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.mp4"), key=lambda p: p.name, reverse=True)[:limit]


class TrainJob:
    """At most one training subprocess, started from a config file."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.output_dir: Path | None = None
        self.command: list[str] = []
        self.stop_sent: float | None = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, config: Path, overrides: list[str], log_dir: Path) -> Path:
        """Validate the config (as `train` will), then start; returns the run's output_dir."""
        from ufo_video.config import load_config

        if self.running():
            raise UfoError(f"a training is already running (output_dir {self.output_dir}); stop it first")
        cfg = load_config(config, overrides)
        self.output_dir = Path(cfg.train.output_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"train-{time.strftime('%Y%m%d-%H%M%S')}.log"
        self.stop_sent = None
        self.command = [sys.executable, "-m", "ufo_video", "train", str(config), *overrides]
        env = child_env(dict(os.environ, PYTHONUNBUFFERED="1"))  # the trainer ends when this process does
        src = str(Path(__file__).resolve().parents[2])  # this package's own source, also for the child
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with self.log_path.open("w") as log:
            log.write("$ " + shlex.join(self.command) + "\n")
            log.flush()
            # its own process group: Ctrl-C in the UI's terminal does not reach it; stop() does
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)  # fmt: skip
        return self.output_dir

    def stop(self, wait: float = 0.0) -> int | None:
        """SIGTERM to the trainer (it finishes the step and saves a checkpoint); optionally wait up to
        `wait` s for it to exit. Returns its exit status, or None while it is still saving."""
        if not self.running():
            raise UfoError("no training is running")
        self.proc.send_signal(signal.SIGTERM)
        self.stop_sent = time.time()
        if wait:
            try:
                return self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                return None
        return None

    def status(self) -> str:
        if self.proc is None:
            return "no training started from this page"
        code = self.proc.poll()
        if code is None:
            state = "stopping (finishing the step, then saving a checkpoint)" if self.stop_sent else "running"
        elif code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
            state = f"stopped (exit status {code}); {self.newest_checkpoint()}"
        elif code == 0:
            state = f"finished; {self.newest_checkpoint()}"
        else:
            state = f"exited with status {code} (see the log)"
        return f"training {state}: pid {self.proc.pid}, output_dir {self.output_dir}"

    def newest_checkpoint(self) -> str:
        found = checkpoints(self.output_dir) if self.output_dir else []
        if not found:
            return "no checkpoint saved"
        step, file, _, state, _ = found[-1]
        return f"newest checkpoint: step {step} ({file or 'no LoRA file'}{', full state' if state == 'yes' else ''})"

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        with self.log_path.open(encoding="utf-8", errors="replace", newline="") as f:  # keep the \r of a bar
            text = f.read()
        return "\n".join(terminal_lines(text)[-lines:])


def terminal_lines(text: str) -> list[str]:
    """The non-empty lines as a terminal shows them: a progress bar redraws its line with carriage
    returns (tqdm writes each step's state after a \\r), so only the last state of each line is kept."""
    shown = []
    for line in text.replace("\r\n", "\n").split("\n"):
        last = next((part for part in reversed(line.split("\r")) if part.strip()), "")
        if last.strip():
            shown.append(last.rstrip())
    return shown
