"""SIGTERM and SIGINT, the same for every command.

`docker stop`, systemd, Slurm's time limit and a plain `kill` send SIGTERM; Ctrl-C sends SIGINT.
Python's defaults treat them differently (SIGTERM ends the process at once: no `finally`, temp
files left, no message) and a process started with SIGINT ignored (`cmd &` in a script, `nohup`)
never even installs the Ctrl-C handler. `install()` (called by the CLI for every command) sets
both handlers explicitly:

- normally a signal raises `StopRequested` (a KeyboardInterrupt) where the main thread is, so
  `finally` blocks and atomic writes clean up, and the CLI exits with 128 + the signal number;
- inside `deferred()` (the training loop) a signal only records the request; the loop checks
  `requested()` at its next safe point (a step boundary), saves and returns. Further signals while
  deferred print one line and change nothing, so a second Ctrl-C cannot interrupt the checkpoint
  being written. (`kill -9` still can: every checkpoint write is atomic, the last complete one is
  kept.)
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(KeyboardInterrupt):
    """A stop signal arrived; `signum` says which (SIGINT for a plain KeyboardInterrupt)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_state: dict = {"deferred": 0, "signum": None, "notes": 0}


def _handler(signum: int, frame) -> None:
    if _state["deferred"]:
        first = _state["signum"] is None
        if first:
            _state["signum"] = signum
        elif _state["notes"] == 0:  # one line, however many signals follow
            _state["notes"] += 1
            print(f"\n{signal.Signals(signum).name} again: still stopping cleanly (saving); wait for it to finish",
                  file=sys.stderr, flush=True)
        return
    raise StopRequested(signum)


def install() -> None:
    """Handle SIGTERM and SIGINT as described above (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        signal.signal(sig, _handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block, stop signals are recorded (see `requested`) instead of raised."""
    _state["deferred"] += 1
    try:
        yield
    finally:
        _state["deferred"] -= 1


def requested() -> int | None:
    """The first stop signal received inside `deferred()` (None when none)."""
    return _state["signum"]


def reset() -> None:
    """Forget a recorded request (after the run that honoured it; tests run several in-process)."""
    _state["signum"], _state["notes"] = None, 0


def exit_code(signum: int | None) -> int:
    """The shell's convention: 128 + signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum or signal.SIGINT)
