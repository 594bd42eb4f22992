"""Run decode tasks in child processes with a per-task deadline.

Why not a DataLoader or ProcessPoolExecutor: a segfault inside FFmpeg or a decoder stuck on a
malformed file cannot be caught in-process. A DataLoader turns a dead worker into an exception
that ends training; a ProcessPoolExecutor marks the whole pool broken and cannot kill a hung
task. Here each task runs in one child; a task that exceeds ``timeout`` or whose child dies
becomes a failed ``Outcome`` (with the reason), that child is killed and replaced, and the other
tasks go on.

Frames come back through shared memory, not the pipe: each worker gets an anonymous shared
mapping from the parent when it is forked; a large numpy result is written there and only its
shape and dtype go through the pipe, and the parent copies it out once before the worker gets
its next task. Pickling a clip through a pipe costs a pickle copy, dozens of 64 KiB writes and
reads and an unpickle copy, on both sides of a 2-core machine. Results that do not fit
(``SHARED_BYTES``), non-array results and the spawn start method use the pipe as before.

Only expected data errors (``DataError``) become failures; any other exception in a child is a
bug and is re-raised in the parent with the child's traceback.

``workers=0`` runs tasks in the calling process (no isolation, no timeout): for debugging and
for tiny datasets only.

Lifetime: a worker exits within about a second of its parent's death, however the parent died
(`process.children.exit_with_parent`), and never holds the parent's locks (`process.locks`).

Reuse across epochs (``shared_pool``): the trainer builds a new loader every epoch, and forking
the workers of a process that holds torch (and later a model) costs tens of milliseconds per
worker, every epoch. ``shared_pool(workers, timeout)`` hands out a ``PoolLease`` on ONE pool per
process, kept alive between leases while its settings match and closed at interpreter exit
(like a DataLoader's ``persistent_workers``). A lease namespaces its keys, so two loaders can
share the pool at once, and closing a lease forgets its unfinished tasks (a ``break`` out of an
epoch leaves nothing behind for the next). Consequence, as with persistent workers: workers are
forked once, so state the parent changes afterwards is not seen by them; tasks must depend on
their arguments only (every task in ``media`` does).
"""

from __future__ import annotations

import atexit
import gc
import itertools
import mmap
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Callable

import numpy as np

from ufo_video.errors import DataError
from ufo_video.process.children import exit_with_parent


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


# address space reserved per worker for results; pages are committed only when written, so a
# worker holds as much as its largest result (a 49x512x512 clip is 37 MiB)
SHARED_BYTES = 256 * 2**20
SHARED_MIN_BYTES = 64 * 1024  # smaller results go through the pipe (a copy is cheaper than the bookkeeping)


@dataclass(frozen=True)
class _InShared:
    """The result array is in the worker's shared mapping."""

    shape: tuple
    dtype: str


def _child(conn, shared, parent_end, parent_pid: int) -> None:
    # the parent's end of this worker's own pipe, inherited through fork: while a copy is open
    # here, the worker never sees EOF when the parent dies
    if parent_end is not None:
        parent_end.close()
    exit_with_parent(parent_pid)  # `kill -9` of the parent runs no cleanup: the worker notices by itself
    gc.enable()  # forked while the parent paused its collector (`plan.collector_paused`): collect as usual
    # Ctrl-C reaches the whole process group, and systemd or `kill -- -PGID` send SIGTERM to all
    # of it; the parent stops the workers (it may still need them to finish a step before it
    # saves), so a worker ignores both rather than dying with a half-done task or a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        key, fn, args = msg
        status, value = _run(fn, args)
        if (status == "ok" and shared is not None and isinstance(value, np.ndarray) and not value.dtype.hasobject
                and SHARED_MIN_BYTES <= value.nbytes <= len(shared)):
            np.ndarray(value.shape, value.dtype, buffer=shared)[...] = value
            value = _InShared(value.shape, value.dtype.str)
        conn.send((key, status, value))


def _shared_mapping(use: bool):
    if not use:
        return None
    try:
        return mmap.mmap(-1, SHARED_BYTES)  # anonymous, MAP_SHARED: inherited by the forked child
    except OSError:  # no room for the reservation (strict overcommit): results use the pipe
        return None


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
        self._fork = "fork" in methods
        self._shared: dict = {}  # conn -> the worker's shared mapping (or None)
        self._idle: list = []
        self._busy: dict = {}  # conn -> (proc, key, deadline)
        self._pending: deque = deque()
        self._done: dict[Any, Outcome] = {}
        self._procs: dict = {}  # conn -> proc
        self._orphans: set = set()  # keys of forgotten tasks still running: results are dropped
        self.pid = os.getpid()
        self.leases = 0  # open PoolLeases (see shared_pool)
        for _ in range(workers):
            self._spawn()

    def _spawn(self) -> None:
        parent, child = self._ctx.Pipe()
        shared = _shared_mapping(self._fork)
        # the parent's end goes along only under fork (inherited anyway, closed first thing);
        # spawn would pickle it into a new pipe end of the child's own
        args = (child, shared, parent if self._fork else None, os.getpid())
        proc = self._ctx.Process(target=_child, args=args, daemon=True)
        proc.start()
        child.close()
        self._procs[parent] = proc
        self._shared[parent] = shared
        self._idle.append(parent)

    def _retire(self, conn) -> None:
        proc = self._procs.pop(conn)
        proc.kill()
        proc.join(5)
        conn.close()
        shared = self._shared.pop(conn, None)
        if shared is not None:
            shared.close()

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
                self._store(key, Outcome(False, reason=f"decoder process died ({_exit_text(proc.exitcode)})"))
                self._retire(conn)
                self._spawn()
                continue
            if isinstance(value, _InShared):  # copied out before this worker is given another task
                count = int(np.prod(value.shape, dtype=np.int64))
                view = np.frombuffer(self._shared[conn], dtype=np.dtype(value.dtype), count=count)
                value = view.reshape(value.shape).copy()
                del view  # releases the mapping (it is closed when the worker is retired)
            self._idle.append(conn)
            self._store(key, self._outcome(key, status, value))  # a bug raises even for a forgotten task
        now = time.monotonic()
        for conn, (key, deadline) in list(self._busy.items()):
            if now >= deadline:
                del self._busy[conn]
                self._store(key, Outcome(False, reason=f"decoding timed out after {self.timeout:g} s (data.decode_timeout)"))
                self._retire(conn)
                self._spawn()

    def _store(self, key: Any, outcome: Outcome) -> None:
        if key in self._orphans:
            self._orphans.discard(key)
        else:
            self._done[key] = outcome

    def forget(self, belongs: Callable[[Any], bool]) -> None:
        """Drop every task whose key satisfies ``belongs``: queued ones are never run, finished
        results are discarded, running ones finish (or time out) and their results are dropped."""
        self._pending = deque(t for t in self._pending if not belongs(t[0]))
        for key in [k for k in self._done if belongs(k)]:
            del self._done[key]
        self._orphans.update(k for k, _ in self._busy.values() if belongs(k))

    def result(self, key: Any) -> Outcome:
        while key not in self._done:
            if self.workers and not self._procs:
                raise RuntimeError(f"the decode pool was closed while task {key!r} was waiting for it")
            if not self._busy and not any(k == key for k, _, _ in self._pending):
                raise KeyError(f"no task {key!r} was submitted")
            self._step()
        return self._done.pop(key)

    def close(self) -> None:
        if self.pid != os.getpid():  # a forked copy: the children belong to the parent
            self._procs.clear()
            self._shared.clear()
            return
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
        self._pending.clear()
        self._orphans.clear()

    def __enter__(self) -> "IsolatedPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_procs", None):
            self.close()


class PoolLease:
    """Use of a pool under a private key namespace (see module doc); ``close`` forgets what is
    unfinished and closes the pool only when the lease owns it."""

    _ids = itertools.count()

    def __init__(self, pool: IsolatedPool, owned: bool) -> None:
        self.pool, self.owned, self._tag = pool, owned, next(PoolLease._ids)
        self.closed = False
        pool.leases += 1

    def submit(self, key: Any, fn: Callable, *args: Any) -> None:
        self.pool.submit((self._tag, key), fn, *args)

    def result(self, key: Any) -> Outcome:
        return self.pool.result((self._tag, key))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.pool.leases -= 1
        if self.owned:
            self.pool.close()
        else:
            self.pool.forget(lambda k: isinstance(k, tuple) and len(k) == 2 and k[0] == self._tag)

    def __enter__(self) -> "PoolLease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_shared: dict[str, Any] = {"pool": None, "key": None}


def shared_pool(workers: int, timeout: float) -> PoolLease:
    """A lease on this process's persistent pool for (workers, timeout), started on first use.
    Other settings replace it when it is idle; while it is leased they get a private pool (closed
    with its lease). ``workers=0`` is always a private in-process pool."""
    key = (workers, float(timeout))
    pool = _shared["pool"]
    if workers == 0:
        return PoolLease(IsolatedPool(0, timeout), owned=True)
    if pool is not None and pool.pid != os.getpid():  # inherited through fork: not ours to use
        pool = _shared["pool"] = None
    if pool is not None and _shared["key"] != key:
        if pool.leases:
            return PoolLease(IsolatedPool(workers, timeout), owned=True)
        pool.close()
        pool = _shared["pool"] = None
    if pool is None:
        pool = _shared["pool"] = IsolatedPool(workers, timeout)
        _shared["key"] = key
    return PoolLease(pool, owned=False)


def close_shared_pool() -> None:
    """Stop the persistent workers (at exit; tests call it to start from fresh workers)."""
    pool, _shared["pool"], _shared["key"] = _shared["pool"], None, None
    if pool is not None:
        pool.close()


atexit.register(close_shared_pool)


def map_isolated(fn: Callable, arg_list: list[tuple], workers: int, timeout: float, progress=None,
                 shared: bool = False) -> list[Outcome]:
    """Run ``fn(*args)`` for each args tuple in isolation; outcomes in input order. ``shared``
    runs them on the persistent pool (``shared_pool``) instead of a pool of their own."""
    if not arg_list:
        return []
    lease = shared_pool(workers, timeout) if shared else PoolLease(IsolatedPool(workers, timeout), owned=True)
    with lease as pool:
        for i, args in enumerate(arg_list):
            pool.submit(i, fn, *args)
        out = []
        for i in range(len(arg_list)):
            out.append(pool.result(i))
            if progress is not None:
                progress(1)
        return out
