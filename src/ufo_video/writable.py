"""Outputs are checked before long work: a folder that cannot be written, or a file that
would be overwritten unasked, is a one-line error naming it — never a traceback after minutes
of work, never lost results."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ufo_video.atomic import DiskFullError, disk_errors
from ufo_video.errors import OutputError, exists_error


def ensure_writable(folder: str | Path, what: str = "output folder") -> Path:
    """Create `folder` (and parents) and prove a file can be written there; else a one-line error.
    The probe holds one byte: an empty file needs no data block, so it would pass on a full disk."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder} exists and is not a folder; choose a folder path")
    probe = folder / f".ufo-write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with disk_errors(folder):
            try:
                with open(probe, "wb") as fh:
                    fh.write(b"\0")
                    fh.flush()  # a full disk fails here, not at close
            finally:
                probe.unlink(missing_ok=True)
    except DiskFullError as exc:
        raise exc.with_context("nothing was written yet") from None
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise OutputError(f"{what} {folder} is not writable ({reason}); choose another folder or fix its permissions") from None
    return folder


def refuse_existing(paths: list[Path], flag: str = "--overwrite") -> None:
    """Error naming the first of `paths` that exists (unless the caller was told to overwrite)."""
    existing = [p for p in paths if Path(p).exists()]
    if existing:
        raise exists_error(existing[0], flag, len(existing) - 1)


def free_bytes(folder: str | Path) -> int:
    """Free bytes (for this user) on the disk that holds `folder`, or its nearest existing parent."""
    probe = Path(folder).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _size(n: int) -> str:
    return f"{n:,} bytes" if n < 10**6 else f"{n / 10**6:,.1f} MB"


def check_free_space(folder: str | Path, needed: int, what: str) -> None:
    """Refuse before long work when `folder`'s disk plainly cannot hold `needed` bytes (`what`
    says what they are and how they were estimated)."""
    free = free_bytes(folder)
    if needed > free:
        raise OutputError(f"{folder}: not enough free disk for {what}: needs ~{_size(needed)}, {_size(free)} free; "
                          "free space or choose another folder (nothing was done yet)")
