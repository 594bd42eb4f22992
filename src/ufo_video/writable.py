"""Outputs are checked before long work: a folder that cannot be written, or a file that
would be overwritten unasked, is a one-line error naming it — never a traceback after minutes
of work, never lost results."""

from __future__ import annotations

import os
from pathlib import Path

from ufo_video.errors import UfoError


class OutputError(UfoError):
    """An output cannot be written where asked (not writable, or exists and not to be replaced)."""


def ensure_writable(folder: str | Path, what: str = "output folder") -> Path:
    """Create `folder` (and parents) and prove a file can be written there; else a one-line error."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder} exists and is not a folder; choose a folder path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".ufo-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise OutputError(f"{what} {folder} is not writable ({reason}); choose another folder or fix its permissions") from None
    return folder


def exists_error(path: str | Path, flag: str = "--overwrite", more: int = 0) -> OutputError:
    """The one line for an output that exists: the check before the work and the exclusive
    placement after it (`ufo_video.atomic`, a concurrent run was faster) say the same."""
    extra = f" (and {more} more)" if more else ""
    return OutputError(f"{path} already exists{extra}; pass {flag} to replace it, or choose another name")


def refuse_existing(paths: list[Path], flag: str = "--overwrite") -> None:
    """Error naming the first of `paths` that exists (unless the caller was told to overwrite)."""
    existing = [p for p in paths if Path(p).exists()]
    if existing:
        raise exists_error(existing[0], flag, len(existing) - 1)
