"""An output folder belongs to one training run at a time.

`claim_output_dir` is called by the main process before the model is loaded:

1. the folder is created and checked writable (a probe file), so a read-only place fails at once
   with its name instead of after minutes of loading;
2. an exclusive `fcntl.flock` on ``.ufo-train.lock`` is taken for the whole run
   (`process.locks.exclusive_lock`). The kernel drops the lock when the process dies (Ctrl-C,
   crash, ``kill -9``) and forked decode workers never hold a copy, so a killed run never leaves
   the folder stuck; the pid, host and start time written into the file (only once the lock is
   ours, so a refused attempt keeps them) only make the message useful;
3. a folder holding another run's outputs (checkpoints, ``losses.jsonl``) is refused for a fresh
   run: it is continued with ``resume_from_checkpoint`` or started over with
   ``overwrite_output_dir=true``, which deletes those outputs, but only through
   `ClaimedDir.remove_previous` once the dataset was read and the model set up: a run that fails
   its checks leaves the old run intact. The deleted names are printed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ufo_video.process.locks import LockBusy, exclusive_lock
from ufo_video.writable import OutputError, ensure_writable

LOCK_NAME = ".ufo-train.lock"
# what a run writes into output_dir (besides the lock): removed by overwrite_output_dir
RUN_OUTPUT_GLOBS = ("checkpoint-*", ".tmp-checkpoint-*", "losses.jsonl", "config.toml", "samples", "logs",
                    "train-report.html")  # fmt: skip


class OutputDirError(OutputError):
    """The output folder cannot be used by this run (in use, holds another run's outputs)."""


def previous_outputs(folder: Path) -> list[Path]:
    """Outputs of an earlier run in `folder` (checkpoints, the loss log)."""
    found = [p for pattern in ("checkpoint-*", "losses.jsonl") for p in folder.glob(pattern)]
    return sorted(found)


@dataclass
class ClaimedDir:
    """A held output folder; `remove_previous` deletes an earlier run's outputs if the run asked
    to start over (`overwrite_output_dir`), and does nothing otherwise."""

    folder: Path
    previous_due: bool = False  # overwrite_output_dir found an earlier run's outputs
    log: Callable[[str], None] = print

    def remove_previous(self) -> list[Path]:
        if not self.previous_due:
            return []
        self.previous_due = False
        removed = _remove_run_outputs(self.folder)
        names = ", ".join(p.name for p in removed[:5]) + (f" ... ({len(removed) - 5} more)" if len(removed) > 5 else "")
        self.log(f"overwrite_output_dir: removed the previous run's {len(removed)} outputs from {self.folder}: {names}")
        return removed


@contextlib.contextmanager
def claim_output_dir(folder: Path, *, resuming: bool, start_over: bool, log=print) -> Iterator[ClaimedDir]:
    """Hold `folder` for one run (see the module docstring); released when the block ends."""
    folder = ensure_writable(folder)
    lock_path = folder / LOCK_NAME
    note = f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}"

    def unsupported(exc: OSError) -> None:  # a filesystem without locks (some network mounts): say so, go on
        log(f"warning: cannot lock {lock_path} ({exc.strerror or exc}); a second run into this folder "
            "would not be detected")

    with contextlib.ExitStack() as held:  # the lock is released when the block ends
        try:
            held.enter_context(exclusive_lock(lock_path, note=note, on_unsupported=unsupported))
        except LockBusy as busy:
            raise OutputDirError(
                f"output folder {folder} is in use by another training run ({busy.holder}); wait for it "
                "to finish or set train.output_dir to another folder"
            ) from None
        old = previous_outputs(folder)
        due = bool(old) and not resuming
        if due:
            if not start_over:
                names = ", ".join(p.name for p in old[:4]) + (" ..." if len(old) > 4 else "")
                raise OutputDirError(
                    f"output folder {folder} holds another run's outputs ({names}); continue that run with "
                    "resume_from_checkpoint=latest, start over with overwrite_output_dir=true (deletes them), "
                    "or set train.output_dir to a new folder"
                )
            log(f"overwrite_output_dir: the previous run's {len(old)} outputs in {folder} are removed once the "
                "dataset and the model are ready")
        yield ClaimedDir(folder, previous_due=due, log=log)


def _remove_run_outputs(folder: Path) -> list[Path]:
    removed = []
    for pattern in RUN_OUTPUT_GLOBS:
        for path in sorted(folder.glob(pattern)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed
