"""Files the trainer skips (missing, unreadable, failing to decode): each reported once, briefly.

Why: a dataset with a moved folder has thousands of missing files; a line each buries what
matters (the refusal, the run's start), and every epoch's loader re-reading the header check
printed them all again. So, per run, the first `SHOWN` skipped files are printed with their
reasons and the rest as one line counting them by reason; where the run has an output folder
(training: `output_dir`), every one is listed in `LIST_NAME` there. Later skips once the first
`SHOWN` are out (a file failing to decode mid-run) are listed and counted, not printed.

"Per run" is the scope of `per_run()` (entered by `plan.sample_list_per_run`: the trainer's run,
`data cache`): a file is reported once however many loaders (epochs, processes walked by `data
cache`) meet it. Outside a scope, each loader reports on its own (`data preview`, tools).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger("ufo_video.data")

SHOWN = 5
LIST_NAME = "skipped-files.txt"
REASON_CHARS = 100  # a decoder's message can be long; the count line quotes at most this much


def by_reason(reasons: Iterable[str], kinds: int = 3) -> str:
    """'9995 x No such file or directory, 3 x moov atom not found, ...': the commonest first."""
    counts = Counter(r if len(r) <= REASON_CHARS else r[: REASON_CHARS - 3] + "..." for r in reasons)
    shown = ", ".join(f"{n} x {r}" for r, n in counts.most_common(kinds))
    return shown + (f", ... ({len(counts) - kinds} other reasons)" if len(counts) > kinds else "")


def more_line(hidden: int, reasons: Iterable[str], where: str) -> str:
    """The line that stands for the problems not printed one by one."""
    return f"... and {hidden} more ({by_reason(reasons)}); {where}"


class SkipLog:
    """The skipped files reported so far in one run (or one loader, outside a run)."""

    def __init__(self, list_file: Path | None = None) -> None:
        self.list_file = list_file
        self.reported: set[str] = set()
        self.printed = 0
        self.summarised = False

    def report(self, failures: Iterable[tuple[str, str]]) -> None:
        """Report the (path, reason) pairs not reported yet (see the module doc)."""
        fresh = {}
        for path, reason in failures:
            if path not in self.reported and path not in fresh:
                fresh[path] = reason
        if not fresh:
            return
        self.reported.update(fresh)
        items = list(fresh.items())
        if self.list_file is not None:
            self.list_file.parent.mkdir(parents=True, exist_ok=True)
            with self.list_file.open("a") as fh:
                fh.writelines(f"{path}: {reason}\n" for path, reason in items)
        show = max(0, SHOWN - self.printed)
        for path, reason in items[:show]:
            log.warning("data: skipping %s: %s", path, reason)
        self.printed += min(show, len(items))
        hidden = items[show:]
        if hidden and not self.summarised:  # once: later ones are counted at the end, not printed
            self.summarised = True
            where = (f"all listed in {self.list_file}" if self.list_file is not None
                     else "`ufo-video data check` lists all")  # fmt: skip
            log.warning("data: %s; further skipped files are not printed",
                        more_line(len(hidden), (r for _, r in hidden), where))


_RUN: SkipLog | None = None


@contextlib.contextmanager
def per_run(list_file: Path | None = None) -> Iterator[SkipLog]:
    """Scope of one run: files are reported once in it, and listed in `list_file` (replaced: it
    describes this run). Nested scopes share the outer one."""
    global _RUN
    outer = _RUN
    if outer is None:
        if list_file is not None:
            list_file.unlink(missing_ok=True)
        _RUN = SkipLog(list_file)
    try:
        yield _RUN
    finally:
        _RUN = outer


def current() -> SkipLog:
    """The run's log inside `per_run`, else a fresh one (one loader reports on its own)."""
    return _RUN if _RUN is not None else SkipLog()


def report_notices(notices: list[tuple[str, str]]) -> None:
    """Files the trainer adapts or leaves out by policy (short clips): the first `SHOWN`, then a count."""
    for path, message in notices[:SHOWN]:
        log.warning("data notice: %s: %s", path, message)
    if len(notices) > SHOWN:
        log.warning("data notice: %s", more_line(len(notices) - SHOWN, (m for _, m in notices[SHOWN:]),
                                                 "`ufo-video data check` lists all"))
