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
   ``overwrite_output_dir=true`` (which deletes those outputs first, and says so).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from collections.abc import Iterator
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


@contextlib.contextmanager
def claim_output_dir(folder: Path, *, resuming: bool, start_over: bool, log=print) -> Iterator[Path]:
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
        if old and not resuming:
            if not start_over:
                names = ", ".join(p.name for p in old[:4]) + (" ..." if len(old) > 4 else "")
                raise OutputDirError(
                    f"output folder {folder} holds another run's outputs ({names}); continue that run with "
                    "resume_from_checkpoint=latest, start over with overwrite_output_dir=true (deletes them), "
                    "or set train.output_dir to a new folder"
                )
            removed = _remove_run_outputs(folder)
            log(f"overwrite_output_dir: removed the previous run's {len(removed)} outputs from {folder}")
        yield folder


def _remove_run_outputs(folder: Path) -> list[Path]:
    removed = []
    for pattern in RUN_OUTPUT_GLOBS:
        for path in folder.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed
