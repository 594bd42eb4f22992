"""Skipped files are reported once per run and briefly (`data/skips.py`); the CLI tests cover the
commands, these the rules: the cap across calls, the list file, nesting, notices."""

from __future__ import annotations

import logging
from pathlib import Path

from ufo_video.data import skips


def _said(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ufo_video.data"]


def test_later_skips_past_the_cap_are_listed_and_counted_once_not_printed(tmp_path: Path, caplog) -> None:
    listed = tmp_path / "out" / skips.LIST_NAME
    listed.parent.mkdir()
    listed.write_text("an earlier run's list\n")
    with caplog.at_level(logging.WARNING, logger="ufo_video.data"), skips.per_run(listed) as run:
        assert not listed.exists()  # the list describes this run
        run.report([(f"/d/{i}.png", "No such file or directory") for i in range(3)])
        with skips.per_run(tmp_path / "inner.txt"):  # a nested scope is the same run
            assert skips.current() is run
            skips.current().report([("/d/0.png", "No such file or directory")])  # already reported
        for i in range(3, 9):  # one at a time, as decode failures come
            run.report([(f"/d/{i}.png", "moov atom not found")])
    said = _said(caplog)
    assert said[:5] == [f"data: skipping /d/{i}.png: {'No such file or directory' if i < 3 else 'moov atom not found'}"
                        for i in range(5)]
    assert said[5:] == [f"data: ... and 1 more (1 x moov atom not found); all listed in {listed}; "
                        "further skipped files are not printed"]
    assert len(listed.read_text().splitlines()) == 9 and not (tmp_path / "inner.txt").exists()
    assert skips.current() is not run  # outside the scope every loader reports on its own


def test_notices_past_the_cap_are_one_line() -> None:
    assert skips.by_reason(["a", "b", "a", "c", "d"], kinds=2) == "2 x a, 1 x b, ... (2 other reasons)"
    assert skips.by_reason(["x" * 300]) == f"1 x {'x' * 97}..."


def test_report_notices_caps_the_lines(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="ufo_video.data"):
        skips.report_notices([(f"/d/{i}.mp4", "skipped: 3 frames cannot give 17 frames") for i in range(40)])
    said = _said(caplog)
    assert len(said) == skips.SHOWN + 1
    assert said[-1] == ("data notice: ... and 35 more (35 x skipped: 3 frames cannot give 17 frames); "
                        "`ufo-video data check` lists all")
