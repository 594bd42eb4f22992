"""Atomic, durable file writes shared by every stage.

Nothing the user made may be lost or half-written: each write goes to a temporary file in the
target folder, is fsynced, then renamed over the final name (and the folder fsynced), so a
crash or `kill -9` leaves either the old file or the complete new one.

An output that must not replace anything (every "refused unless --overwrite" output) is placed
with `exclusive=True`: `os.link(tmp, final)` fails if the name exists, so of two runs writing the
same name at once exactly one wins and the other gets the one-line "already exists" error (the
check before the work cannot see a file that a concurrent run creates later).

A full disk (ENOSPC), an exhausted quota (EDQUOT) or a read-only file system (EROFS) is not a
bug but a state of the user's machine: every write here turns it into one `DiskFullError` that
names the file and what was kept (the temporary file is removed, the old file is untouched), so
the CLI prints one line instead of a traceback. `append_line` is the one non-atomic writer: a
whole line in one `write` on an O_APPEND descriptor, cut back to the old size if it fails, so an
append log never keeps a half line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ufo_video.errors import UfoError, exists_error

# errno -> (what happened, what the user does about it)
DISK_ERRNOS = {
    errno.ENOSPC: ("no space left on device", "free space"),
    errno.EDQUOT: ("disk quota exceeded", "free space (or raise the quota)"),
    errno.EROFS: ("read-only file system", "make the disk writable (or write elsewhere)"),
}
# safetensors' Rust writer raises SafetensorError (not an OSError, no errno attribute) whose
# message ends in the OS error, e.g. "Error while serializing: I/O error: No space left on
# device (os error 28)"; only this "(os error N)" tail is trusted, and only for the errnos above
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


class DiskFullError(UfoError):
    """A write failed because the disk is full, over quota or read-only. `kept` says what the
    user still has, `rerun` how to continue once space is freed."""

    DEFAULT_KEPT, DEFAULT_RERUN = "nothing was replaced", "run again"  # all one file write knows

    def __init__(self, path: str | Path, code: int, kept: str = DEFAULT_KEPT, rerun: str = DEFAULT_RERUN):
        self.path, self.code, self.kept, self.rerun = Path(path), code, kept, rerun
        what, fix = DISK_ERRNOS[code]
        super().__init__(f"{what} while writing {self.path}; {kept}; {fix} and {rerun}")

    def with_context(self, kept: str, rerun: str | None = None, path: str | Path | None = None) -> DiskFullError:
        """The same failure, told with what the caller knows was kept (and how to go on)."""
        return DiskFullError(path or self.path, self.code, kept, rerun or self.rerun)


def disk_errno(exc: BaseException) -> int | None:
    """The errno of `exc` when it is one of DISK_ERRNOS (an OSError, or a safetensors write error)."""
    if isinstance(exc, DiskFullError):
        return exc.code
    if isinstance(exc, OSError):
        return exc.errno if exc.errno in DISK_ERRNOS else None
    if type(exc).__name__ == "SafetensorError":
        m = _RUST_OS_ERROR.search(str(exc))
        code = int(m.group(1)) if m else None
        return code if code in DISK_ERRNOS else None
    return None


@contextlib.contextmanager
def disk_errors(path: str | Path, *, within: bool = False) -> Iterator[None]:
    """Turn a full-disk error of the writes inside into `DiskFullError` naming `path`; with
    `within` (`path` is the folder written into) the file the OSError names, when it names one.
    Anything else passes unchanged."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        code = disk_errno(exc)
        if code is None:
            raise
        named = getattr(exc, "filename", None) if within else None
        raise DiskFullError(named or path, code) from exc


def fsync_file(path: str | Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new entry in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | Path) -> None:
    """fsync every file below `folder` (before renaming a whole folder into place)."""
    for root, _, files in os.walk(folder):
        for name in files:
            fsync_file(os.path.join(root, name))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def place_exclusive(tmp: Path, path: Path) -> None:
    """Give the complete file `tmp` the name `path` unless `path` exists (then `OutputError`, and
    `tmp` is left for the caller to remove). A hard link is created atomically and never replaces;
    a filesystem without hard links gets an `O_EXCL` placeholder that the rename then replaces
    (the name is claimed just as exclusively; a crash in between leaves an empty file)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise exists_error(path) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise exists_error(path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def place_dir_exclusive(tmp: Path, path: Path) -> None:
    """Rename the complete folder `tmp` to `path`; `OutputError` if `path` exists and is not an
    empty folder (rename(2) replaces an empty folder only, so a concurrent writer cannot be lost)."""
    try:
        os.rename(tmp, path)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise exists_error(path) from None
        raise


def write_atomic(path: str | Path, writer: Callable[[Path], None], *, exclusive: bool = False) -> Path:
    """Call `writer(tmp_path)`, fsync the result, rename it over `path`; the temporary file is
    removed if anything fails. The temporary keeps `path`'s suffix so format-sniffing writers
    (Pillow, PyAV, safetensors) see the right extension. `exclusive`: never replace an existing
    `path` (see `place_exclusive`); it raises the "already exists" `OutputError` instead."""
    path = Path(path)
    with disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
    tmp = Path(name)
    try:
        with disk_errors(path):  # the final name: the temporary one is gone when the user reads it
            writer(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
            fsync_file(tmp)
            if exclusive:
                place_exclusive(tmp, path)
            else:
                os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_dir_exclusive(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """A folder built by `writer(tmp_folder)` in a temporary sibling, fsynced and renamed to `path`
    unless `path` exists and is not an empty folder (then `OutputError`; the temporary is removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        writer(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
        fsync_tree(tmp)
        place_dir_exclusive(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)
    return path
def append_line(path: str | Path, line: bytes) -> None:
    """Append one whole line (ending in a newline) in a single `os.write` on an O_APPEND
    descriptor, fsynced. If the write fails or is short (a full disk can write part of it), the
    file is truncated back to its size before, so no reader ever sees half a line that later
    appends would bury in the middle; a full disk raises `DiskFullError`."""
    assert line.endswith(b"\n"), "append_line writes whole lines"
    path = Path(path)
    with disk_errors(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        before = os.fstat(fd).st_size
        try:
            with disk_errors(path):
                written = os.write(fd, line)
                if written != len(line):  # a short write: the disk filled up during it
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, before)
            raise
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | Path, data: bytes, *, exclusive: bool = False) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_bytes(data), exclusive=exclusive)


def write_text_atomic(path: str | Path, text: str, *, exclusive: bool = False) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), exclusive=exclusive)


def write_json_atomic(path: str | Path, data: Any, *, exclusive: bool = False, **dump_kwargs: Any) -> Path:
    """JSON (indent 2, UTF-8, trailing newline) written atomically; `dump_kwargs` go to json.dumps."""
    dump_kwargs.setdefault("indent", 2)
    dump_kwargs.setdefault("ensure_ascii", False)
    return write_text_atomic(path, json.dumps(data, **dump_kwargs) + "\n", exclusive=exclusive)


def save_safetensors_atomic(
    path: str | Path, tensors: dict, metadata: dict[str, str] | None = None, *, exclusive: bool = False
) -> Path:
    """safetensors.torch.save_file through `write_atomic` (tensors made contiguous first)."""
    from safetensors.torch import save_file

    contiguous = {k: v.contiguous() for k, v in tensors.items()}
    return write_atomic(path, lambda tmp: save_file(contiguous, str(tmp), metadata=metadata), exclusive=exclusive)
