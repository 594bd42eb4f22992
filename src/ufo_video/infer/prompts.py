"""Batch prompt files for `ufo-video generate --prompts FILE`.

Two forms, told apart by content: plain text (one prompt per non-blank line) or JSON Lines, one
object per line with `prompt` and optionally `negative_prompt`, `seed`, `image`, `end_image`.
A field a record leaves out takes the run's value (flags / config); relative image paths are
relative to the prompt file's folder.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ufo_video.errors import UfoError
from ufo_video.infer.settings import VideoRequest

RECORD_KEYS = {"prompt", "negative_prompt", "seed", "image", "end_image"}


def _is_jsonl(path: Path, lines: list[str]) -> bool:
    return path.suffix.lower() == ".jsonl" or all(line.lstrip().startswith("{") for line in lines)


def read_prompt_file(path: str | Path, base: VideoRequest) -> list[VideoRequest]:
    """One `VideoRequest` per prompt; every problem names the file and line."""
    p = Path(path)
    if not p.is_file():
        raise UfoError(f"prompt file not found: {p}")
    lines = [(i, line) for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
    if not lines:
        raise UfoError(f"prompt file {p} is empty: write one prompt per line, or JSON Lines records with a 'prompt' field")
    if not _is_jsonl(p, [line for _, line in lines]):
        return [replace(base, prompt=line.strip()) for _, line in lines]
    out = []
    for number, line in lines:
        where = f"{p}:{number}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UfoError(f"{where}: not a JSON object ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise UfoError(f"{where}: each line must be a JSON object with a 'prompt' field")
        unknown = set(rec) - RECORD_KEYS
        if unknown:
            raise UfoError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(RECORD_KEYS))}")
        if not isinstance(rec.get("prompt"), str) or not rec["prompt"].strip():
            raise UfoError(f"{where}: 'prompt' is missing or empty")
        if "seed" in rec and (not isinstance(rec["seed"], int) or isinstance(rec["seed"], bool)):
            raise UfoError(f"{where}: 'seed' must be an integer, got {rec['seed']!r}")
        for key in ("negative_prompt", "image", "end_image"):
            if key in rec and rec[key] is not None and not isinstance(rec[key], str):
                raise UfoError(f"{where}: '{key}' must be a string")
        for key in ("image", "end_image"):
            if rec.get(key) and not Path(rec[key]).is_absolute():
                rec[key] = str(p.parent / rec[key])
        out.append(replace(base, **rec))
    return out
