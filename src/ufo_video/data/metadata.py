"""Dataset metadata: the guide's JSON list of ``{file_path, text, type}``, plus JSONL and CSV.

Why strict: a metadata typo in a multi-day training run should stop the run at load time with
the file and the entry index, not surface later as a black clip or a silently empty caption.

Rules (documented differences from the reference):
- ``text`` may also be spelled ``cap``. When both are missing, a ``.txt`` sidecar next to the
  media (same stem) is read; when that is missing too the caption is ``""`` and
  ``ufo-video data check`` reports ``empty_caption``.
- ``type`` missing: inferred from the file extension (the reference assumes "image", which
  turns every untyped video entry into an unreadable image).
- ``file_path`` is relative to the dataset root. Absolute paths and paths that leave the root
  (``..``, or a symlink resolving outside) are rejected unless ``allow_outside_paths``.
"""

from __future__ import annotations

import csv
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ufo_video.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".webm", ".mkv")
MEDIA_TYPES = ("image", "video")


class MetadataError(DataError):
    """A problem with the metadata file itself; ``code`` is invalid_json, missing_field or wrong_type."""

    def __init__(self, code: str, message: str, index: int | None = None,
                 entries: list[tuple[int | None, str, str]] | None = None, total: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.index = index
        self.entries = entries or []  # every bad entry found in the one pass: (index, code, message)
        self.total = total  # entries in the file, when it could be parsed


@dataclass
class Entry:
    """One validated metadata entry. ``problems`` holds entry-level problem codes found while
    resolving it (outside_root, unsupported_format, missing_file, duplicate, empty_caption)."""

    index: int
    file_path: str
    path: Path
    text: str
    type: str | None
    caption_source: str  # "text", "cap", "sidecar" or "none"
    problems: list[tuple[str, str]] = field(default_factory=list)


def infer_type(path: str | Path) -> str | None:
    """Media type from the extension, or None when the extension is not supported."""
    return _type_of_suffix(Path(path).suffix)


def _type_of_suffix(suffix: str) -> str | None:
    suffix = suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


def read_records(meta_path: str | Path) -> list[dict[str, Any]]:
    """Read raw records from a .json (list), .jsonl or .csv file; file-level errors raise."""
    meta_path = Path(meta_path)
    if not meta_path.is_file():
        raise DataError(f"metadata file not found: {meta_path}")
    suffix = meta_path.suffix.lower()
    text = meta_path.read_text(encoding="utf-8-sig")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MetadataError(
                "invalid_json", f"{meta_path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        if not isinstance(data, list):
            raise MetadataError(
                "wrong_type", f"{meta_path}: the top level must be a JSON list of entries, got {type(data).__name__}"
            )
        records = data
    elif suffix == ".jsonl":
        records, bad_lines = [], []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                index = len(records) + len(bad_lines)
                bad_lines.append((index, "invalid_json",
                                  f"{meta_path}: line {lineno} (entry {index}) is not valid JSON: {exc.msg}"))
                records.append(None)
        if bad_lines:  # report the other lines' problems in the same pass
            errors = bad_lines + [e for e in _record_errors(records, meta_path) if records[e[0]] is not None]
            _raise_all(sorted(errors, key=lambda e: e[0]), len(records))
    elif suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "file_path" not in reader.fieldnames:
            raise MetadataError("missing_field", f"{meta_path}: the CSV header must contain a 'file_path' column")
        records = [{k: v for k, v in row.items() if v not in (None, "")} for row in reader]  # empty cell = absent
    else:
        raise DataError(f"{meta_path}: metadata must end in .json, .jsonl or .csv")
    errors = _record_errors(records, meta_path)
    if errors:
        _raise_all(errors, len(records))
    return records


def _raise_all(errors: list[tuple[int | None, str, str]], total: int) -> None:
    """One error listing every bad entry (all found in one pass), located by the first."""
    first_index, first_code, first_msg = errors[0]
    if len(errors) == 1:
        raise MetadataError(first_code, first_msg, index=first_index, entries=errors, total=total)
    shown = "\n  ".join(m for _, _, m in errors[:20]) + (f"\n  ... {len(errors) - 20} more" if len(errors) > 20 else "")
    raise MetadataError(first_code, f"{len(errors)} bad entries:\n  {shown}", index=first_index, entries=errors,
                        total=total)


def _record_errors(records: list[Any], meta_path: Path) -> list[tuple[int, str, str]]:
    errors = []
    for i, rec in enumerate(records):
        problem = _record_problem(rec, i, meta_path)
        if problem:
            errors.append((i, *problem))
    return errors


def _record_problem(rec: Any, i: int, meta_path: Path) -> tuple[str, str] | None:
    """(code, message) for a malformed record, None when it is well-formed."""
    where = f"{meta_path}: entry {i}"
    if not isinstance(rec, dict):
        return "wrong_type", f"{where} must be an object, got {type(rec).__name__}"
    if "file_path" not in rec:
        return "missing_field", f"{where} has no 'file_path'"
    if not isinstance(rec["file_path"], str) or not rec["file_path"].strip():
        return "wrong_type", f"{where}: 'file_path' must be a non-empty string"
    for key in ("text", "cap"):
        if key in rec and rec[key] is not None and not isinstance(rec[key], str):
            return "wrong_type", f"{where}: '{key}' must be a string, got {type(rec[key]).__name__}"
    if "type" in rec and rec["type"] is not None and rec["type"] not in MEDIA_TYPES:
        return "wrong_type", f"{where}: 'type' must be 'image' or 'video', got {rec['type']!r}"
    return None


class PathResolver:
    """Joins entries' ``file_path`` to one dataset root and confines them to it, cheaply enough
    for 100k-entry datasets (the bench's plan_scale): string operations instead of pathlib, and
    each parent directory's real path computed once. The result is ``Path.resolve()``'s: a
    parent's real path does not depend on the name below it, so only the last component needs
    its own ``lstat`` (a symlink there is resolved in full, like any other ``..`` or link).
    Confinement is judged on that real path, so a symlink (file or folder) leading out of the
    root is refused exactly as before. Parents are cached for one pass (one ``load_entries``)."""

    def __init__(self, root: Path, allow_outside: bool, root_resolved: Path | None = None) -> None:
        self._root_path = root
        self.root_resolved = str(root_resolved or root.resolve())
        # the root itself, and everything below it ("/" contains every path)
        self._prefix = self.root_resolved.rstrip(os.sep) + os.sep
        self.allow_outside = allow_outside
        self._parents: dict[str, str] = {}

    def real(self, path: str) -> str:
        """``os.path.realpath(path)`` (what ``Path.resolve()`` returns) for a normalised path."""
        parent, name = os.path.split(path)
        if not name or name in (".", "..") or not parent:
            return os.path.realpath(path)
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return os.path.realpath(path)
        except OSError:  # missing: realpath keeps the name as it is, so do we
            pass
        real_parent = self._parents.get(parent)
        if real_parent is None:
            real_parent = self._parents[parent] = os.path.realpath(parent)
        return os.path.join(real_parent, name)

    def inside(self, resolved: str) -> bool:
        return resolved == self.root_resolved or resolved.startswith(self._prefix)

    def resolve(self, file_path: str) -> tuple[Path, str, str | None]:
        """(path, its real path, problem message or None when it escapes)."""
        if os.path.isabs(file_path) and not self.allow_outside:
            return Path(file_path), file_path, (
                f"absolute path {file_path!r} is not allowed (set data.allow_outside_paths=true to permit)")
        path = self._root_path / file_path  # pathlib parses only file_path; normalised as before
        resolved = self.real(str(path))
        if not self.allow_outside and not self.inside(resolved):
            return path, resolved, (
                f"{file_path!r} resolves to {resolved}, outside the dataset root {self.root_resolved} "
                "(set data.allow_outside_paths=true to permit)"
            )
        return path, resolved, None


def resolve_path(
    file_path: str, root: Path, allow_outside: bool, root_resolved: Path | None = None
) -> tuple[Path, Path, str | None]:
    """Join ``file_path`` to the root; returns (path, its resolved form, problem message or None
    when it escapes). Many paths under one root: use one ``PathResolver``."""
    path, resolved, problem = PathResolver(root, allow_outside, root_resolved).resolve(file_path)
    return path, Path(resolved), problem


def _caption(rec: dict[str, Any], path: Path) -> tuple[str, str]:
    for key in ("text", "cap"):
        if rec.get(key) is not None:
            return rec[key], key
    sidecar = path.with_suffix(".txt")
    if sidecar.is_file():
        return sidecar.read_text(encoding="utf-8").strip(), "sidecar"
    return "", "none"


def load_entries(meta_path: str | Path, root: str | Path, allow_outside: bool = False) -> list[Entry]:
    """Read and resolve every entry. File-level problems raise ``MetadataError``; entry-level
    problems are attached to each ``Entry`` so callers decide (check reports, training rejects)."""
    resolver = PathResolver(Path(root), allow_outside)
    records = read_records(meta_path)
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for i, rec in enumerate(records):
        path, key, outside = resolver.resolve(rec["file_path"])
        problems: list[tuple[str, str]] = []
        text, source = ("", "none") if outside else _caption(rec, path)
        by_extension = _type_of_suffix(path.suffix)
        media_type = rec.get("type") or by_extension
        if outside:
            problems.append(("outside_root", outside))
        else:
            if by_extension is None:
                problems.append(("unsupported_format", f"extension {path.suffix or '(none)'!r} is not a supported "
                                 f"image {IMAGE_EXTENSIONS} or video {VIDEO_EXTENSIONS} format"))
            elif by_extension != media_type:
                problems.append(("unsupported_format", f"type is {media_type!r} but the extension is {path.suffix!r}"))
            if not os.path.isfile(path):
                problems.append(("missing_file", f"{path} does not exist"))
            if key in seen:
                problems.append(("duplicate", f"same file as entry {seen[key]}"))
            else:
                seen[key] = i
            if not text.strip():
                problems.append(("empty_caption", "no text/cap field, no .txt sidecar, or an empty caption"))
        entries.append(Entry(i, rec["file_path"], path, text, media_type, source, problems))
    return entries
