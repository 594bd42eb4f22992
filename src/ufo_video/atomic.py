"""Atomic, durable file writes shared by every stage.

Nothing the user made may be lost or half-written: each write goes to a temporary file in the
target folder, is fsynced, then renamed over the final name (and the folder fsynced), so a
crash or `kill -9` leaves either the old file or the complete new one.

An output that must not replace anything (every "refused unless --overwrite" output) is placed
with `exclusive=True`: `os.link(tmp, final)` fails if the name exists, so of two runs writing the
same name at once exactly one wins and the other gets the one-line "already exists" error (the
check before the work cannot see a file that a concurrent run creates later).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ufo_video.writable import exists_error


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
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
