"""User-facing errors.

Anything the user can fix (a wrong path, a typo'd key, a broken file) is raised as `UfoError`
with a message that names the file or field and says what to do. The CLI prints such errors
without a stack trace (``--debug`` shows one); every other exception is a bug and is shown in full.
"""

from __future__ import annotations

from pathlib import Path


class UfoError(Exception):
    """An error caused by user input, with a message meant to be read by that user."""


class ConfigError(UfoError):
    """Invalid configuration: unknown key, wrong type or out-of-range value."""


class ModelLoadError(UfoError):
    """A model folder that cannot be loaded exactly as it is on disk."""


class DataError(UfoError):
    """Bad dataset metadata or media."""


class LoraError(UfoError):
    """A LoRA file that is unreadable or does not match the model."""


class OutputError(UfoError):
    """An output cannot be written where asked (not writable, or exists and not to be replaced)."""


def exists_error(path: str | Path, flag: str = "--overwrite", more: int = 0) -> OutputError:
    """The one line for an output that exists: the check before the work and the exclusive
    placement after it (`ufo_video.atomic`, a concurrent run was faster) say the same."""
    extra = f" (and {more} more)" if more else ""
    return OutputError(f"{path} already exists{extra}; pass {flag} to replace it, or choose another name")
