"""The page's default model (the shipped tiny base): read by `ui --help` without importing the app."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "assets" / "tiny-base"
