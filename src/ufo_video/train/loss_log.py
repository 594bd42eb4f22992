"""`losses.jsonl`: one JSON line per optimizer step ({"step", "loss", "lr"}), appended by the main process.

Why whole lines only: a full disk used to leave half a line (`{"st`) behind, every later line was
appended after it, and each resume then stopped on it. Now a line is appended with one `write`
on an O_APPEND descriptor and cut back if that fails (`atomic.append_line`), and the readers
(resume's trim, the training report, the UI, the demo) all go through `read_records`: an
incomplete LAST line (a crash or a full disk in the middle of a write, or a line being written
while the UI reads) is dropped with a notice; a corrupt line before the last is an error naming
the file and line, since dropping it would silently lose a step that later ones were logged after.
Imports stay light (no torch): the UI reads this file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from ufo_video.atomic import DiskFullError, append_line, write_text_atomic
from ufo_video.errors import UfoError

LOG_NAME = "losses.jsonl"
Notice = Callable[[str], None] | None


class LossLogError(UfoError):
    """A losses.jsonl line before the last one is not a loss record."""


def _record(line: bytes) -> dict:
    rec = json.loads(line)
    if not isinstance(rec, dict) or "loss" not in rec:
        raise ValueError("not a loss record")
    int(rec["step"])  # a number (KeyError / TypeError / ValueError otherwise)
    return rec


def read_records(path: Path, notice: Notice = print) -> list[dict]:
    """The records of `path` in order (none when it does not exist). An incomplete last line is
    dropped, with a one-line `notice` (None: silently, for a reader of a live file)."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    records = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(_record(line))
        except (ValueError, KeyError, TypeError) as exc:
            shown = line[:40].decode("utf-8", errors="replace")
            if any(rest.strip() for rest in lines[n:]):
                raise LossLogError(
                    f"{path}: line {n} is not a loss record ({shown!r}: {exc}); lines after it were logged later, "
                    "so it is not a cut-off write: fix or delete that line"
                ) from None
            if notice is not None:
                notice(f"notice: {path}: dropped its incomplete last line {n} ({shown!r}), left by a write that was cut off")
            break
    return records


def trim(path: Path, step: int, notice: Notice = print) -> None:
    """Resume: keep the records up to `step` (later ones will be logged again) and drop an
    incomplete last line; rewritten atomically, and only when something changes."""
    path = Path(path)
    if not path.is_file():
        return
    text = "".join(json.dumps(r) + "\n" for r in read_records(path, notice) if int(r["step"]) <= step)
    if text.encode("utf-8") != path.read_bytes():
        write_text_atomic(path, text)


def append(path: Path, step: int, loss: float, lr: float) -> None:
    """One whole line for `step`; a full disk leaves the file as it was and raises `DiskFullError`
    saying what the run keeps."""
    rec = {"step": step, "loss": loss if math.isfinite(loss) else str(loss), "lr": lr}
    try:
        append_line(path, (json.dumps(rec) + "\n").encode("utf-8"))
    except DiskFullError as exc:
        from ufo_video.train.checkpoint import kept_checkpoints

        kept, rerun = kept_checkpoints(Path(path).parent)
        raise exc.with_context(f"the loss of step {step} was not logged, the log is whole up to step {step - 1}; "
                               f"{kept}", rerun) from exc.__cause__  # fmt: skip
