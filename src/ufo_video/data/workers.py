"""Run decode tasks in child processes with a per-task deadline.

Why not a DataLoader or ProcessPoolExecutor: a segfault inside FFmpeg or a decoder stuck on a
malformed file cannot be caught in-process. A DataLoader turns a dead worker into an exception
that ends training; a ProcessPoolExecutor marks the whole pool broken and cannot kill a hung
task. Here each task runs in one child; a task that exceeds ``timeout`` or whose child dies
becomes a failed ``Outcome`` (with the reason), that child is killed and replaced, and the other
tasks go on.

Only expected data errors (``DataError``) become failures; any other exception in a child is a
bug and is re-raised in the parent with the child's traceback.

``workers=0`` runs tasks in the calling process (no isolation, no timeout): for debugging and
for tiny datasets only.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Callable

from ufo_video.errors import DataError


@dataclass
class Outcome:
    ok: bool
    value: Any = None
    reason: str = ""
    code: str = "unreadable"


def _run(fn: Callable, args: tuple) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except DataError as exc:
        return "fail", (str(exc), getattr(exc, "code", "unreadable"))
    except Exception:  # a bug, not bad data: the parent re-raises it with this trace
        return "bug", traceback.format_exc()


def _child(conn) -> None:
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        key, fn, args = msg
        conn.send((key, *_run(fn, args)))


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}, exit code {code}"
        except ValueError:
            return f"killed by signal {-code}, exit code {code}"
    return f"exit code {code}"


class IsolatedPool:
    """``submit(key, fn, *args)`` then ``result(key)``; results may be collected in any order."""

    def __init__(self, workers: int, timeout: float) -> None:
        self.workers, self.timeout = workers, timeout
        # fork, as torch's DataLoader does on Linux: cheap to (re)start and it does not re-import
        # the user's __main__ (spawn would, breaking scripts without a main guard). Children only
        # run PyAV/Pillow/numpy code, never CUDA or torch ops. spawn where fork does not exist.
        methods = mp.get_all_start_methods()
        self._ctx = mp.get_context("fork" if "fork" in methods else "spawn")
        self._idle: list = []
        self._busy: dict = {}  # conn -> (proc, key, deadline)
        self._pending: deque = deque()
        self._done: dict[Any, Outcome] = {}
        self._procs: dict = {}  # conn -> proc
        for _ in range(workers):
            self._spawn()

    def _spawn(self) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_child, args=(child,), daemon=True)
        proc.start()
        child.close()
        self._procs[parent] = proc
        self._idle.append(parent)

    def _retire(self, conn) -> None:
        proc = self._procs.pop(conn)
        proc.kill()
        proc.join(5)
        conn.close()

    def submit(self, key: Any, fn: Callable, *args: Any) -> None:
        if self.workers == 0:
            status, value = _run(fn, args)
            self._done[key] = self._outcome(key, status, value)
        else:
            self._pending.append((key, fn, args))
            self._dispatch()  # idle workers start now, e.g. while the trainer runs a step

    def _outcome(self, key: Any, status: str, value: Any) -> Outcome:
        if status == "ok":
            return Outcome(True, value)
        if status == "fail":
            return Outcome(False, reason=value[0], code=value[1])
        raise RuntimeError(f"bug in a data worker while processing {key!r}:\n{value}")

    def _dispatch(self) -> None:
        while self._idle and self._pending:
            conn = self._idle.pop()
            key, fn, args = self._pending.popleft()
            conn.send((key, fn, args))
            self._busy[conn] = (key, time.monotonic() + self.timeout)

    def _step(self) -> None:
        self._dispatch()
        if not self._busy:
            return
        next_deadline = min(d for _, d in self._busy.values())
        for conn in wait(list(self._busy), timeout=max(0.0, next_deadline - time.monotonic())):
            key, _ = self._busy.pop(conn)
            try:
                _, status, value = conn.recv()
            except (EOFError, OSError):
                proc = self._procs[conn]
                proc.join(5)
                self._done[key] = Outcome(False, reason=f"decoder process died ({_exit_text(proc.exitcode)})")
                self._retire(conn)
                self._spawn()
                continue
            self._idle.append(conn)
            self._done[key] = self._outcome(key, status, value)
        now = time.monotonic()
        for conn, (key, deadline) in list(self._busy.items()):
            if now >= deadline:
                del self._busy[conn]
                self._done[key] = Outcome(False, reason=f"decoding timed out after {self.timeout:g} s (data.decode_timeout)")
                self._retire(conn)
                self._spawn()

    def result(self, key: Any) -> Outcome:
        while key not in self._done:
            if not self._busy and not any(k == key for k, _, _ in self._pending):
                raise KeyError(f"no task {key!r} was submitted")
            self._step()
        return self._done.pop(key)

    def close(self) -> None:
        for conn in list(self._procs):
            if conn not in self._busy:
                try:
                    conn.send(None)
                except (BrokenPipeError, OSError):  # child already gone; it is reaped just below
                    pass
            proc = self._procs[conn]
            proc.join(1)
            self._retire(conn)
        self._idle.clear()
        self._busy.clear()

    def __enter__(self) -> "IsolatedPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_procs", None):
            self.close()


def map_isolated(fn: Callable, arg_list: list[tuple], workers: int, timeout: float, progress=None) -> list[Outcome]:
    """Run ``fn(*args)`` for each args tuple in isolation; outcomes in input order."""
    with IsolatedPool(workers, timeout) as pool:
        for i, args in enumerate(arg_list):
            pool.submit(i, fn, *args)
        out = []
        for i in range(len(arg_list)):
            out.append(pool.result(i))
            if progress is not None:
                progress(1)
        return out
