"""Exclusive locks that a forked child never holds.

`fcntl.flock` locks belong to the open file description, which `fork` shares: a decode worker
forked while the trainer held ``.ufo-train.lock`` kept the lock after the trainer was killed, and
the folder refused every resume until the orphan was found by hand. Descriptors opened by Python
are already closed on `exec` (O_CLOEXEC); this module closes the lock descriptors in every child
made by `fork` too (an `os.register_at_fork` hook, which `multiprocessing`'s fork start method
runs), before any of the child's own code. Closing the child's copy does not release the parent's
lock: a flock lives until every descriptor of the description is closed or it is unlocked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

_held: set[int] = set()  # descriptors of the locks this process holds


def _close_in_child() -> None:
    for fd in _held:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


class LockBusy(Exception):
    """Another process holds the lock; `holder` is the text it wrote into the lock file."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is locked by {holder}")
        self.path, self.holder = path, holder


def read_holder(path: Path) -> str:
    """What the holder wrote into the lock file ("another process" when nothing readable)."""
    try:
        text = Path(path).read_text(errors="replace").strip()
    except OSError:
        return "another process"
    return text or "another process"


@contextlib.contextmanager
def exclusive_lock(path: Path, note: str | None = None, on_unsupported=None) -> Iterator[int]:
    """Hold an exclusive, non-blocking flock on `path` for the block; `LockBusy` when it is held.

    `note` (e.g. "pid 12 on host, started ...") is written into the file once the lock is ours,
    and cleared on release; a refused attempt never touches the file, so the next refusal still
    names the holder. `on_unsupported(exc)` is called when the filesystem has no locks (some
    network mounts); without it that OSError propagates.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    owned = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            owned = True
        except BlockingIOError:
            raise LockBusy(Path(path), read_holder(Path(path))) from None
        except OSError as exc:
            if on_unsupported is None:
                raise
            on_unsupported(exc)
        _held.add(fd)
        if note is not None:
            with contextlib.suppress(OSError):  # the note only makes a refusal clearer
                os.ftruncate(fd, 0)
                os.pwrite(fd, note.encode(), 0)
        yield fd
    finally:
        _held.discard(fd)
        if owned and note is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor releases the lock


def holds_lock(fd: int) -> bool:
    """True while `fd` is one of this process's held lock descriptors (tests)."""
    return fd in _held
