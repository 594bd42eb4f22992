"""User-facing errors.

Anything the user can fix (a wrong path, a typo'd key, a broken file) is raised as `UfoError`
with a message that names the file or field and says what to do. The CLI prints such errors
without a stack trace (``--debug`` shows one); every other exception is a bug and is shown in full.
"""

from __future__ import annotations


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
