"""`ufo-video bench`: smoke mode through the CLI writes a JSON with every field; the ratio and
spread maths and target judging against hand-computed values. No timing assertions (timings
depend on the machine's load)."""

from __future__ import annotations

import json

import pytest

from ufo_video.bench.measure import ABTiming, Spread, interleave
from ufo_video.bench.results import CaseResult, Target, format_table
from ufo_video.bench.runner import CASES
from ufo_video.cli import main

CASE_FIELDS = {"name", "description", "unit", "a", "b", "ratio", "target", "met", "a_seconds", "b_seconds",
               "peak_bytes_a", "peak_bytes_b", "notes", "details"}  # fmt: skip
SPREAD_FIELDS = {"median", "min", "max", "q1", "q3", "values"}


def test_smoke_bench_through_cli_writes_every_field(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--smoke", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert {"preset", "smoke", "rounds", "cases_run", "machine", "versions", "memory_method", "load_average_before",
            "load_average_after", "seconds", "cases", "command"} <= set(data)  # fmt: skip
    assert data["smoke"] is True and data["rounds"] == 1 and data["preset"]["name"] == "smoke"
    assert data["command"] == f"ufo-video bench --smoke --json {out}"
    assert {"cpu", "logical_cpus", "device"} <= set(data["machine"]) and "torch" in data["versions"]
    assert [c["name"] for c in data["cases"]] == list(CASES) == data["cases_run"]
    for case in data["cases"]:
        assert set(case) == CASE_FIELDS, case["name"]
        assert set(case["ratio"]) == SPREAD_FIELDS and len(case["ratio"]["values"]) >= 1
        assert case["ratio"]["min"] <= case["ratio"]["median"] <= case["ratio"]["max"]
        assert case["ratio"]["median"] > 0
        assert case["met"] in (True, False, None) and (case["met"] is None) == (case["target"] == "report")
        assert case["name"] in table
    by_name = {c["name"]: c for c in data["cases"]}
    if data["memory_method"] != "unavailable":
        assert all(isinstance(c["peak_bytes_a"], int) for c in data["cases"])
    assert by_name["cached_step"]["details"]["mode"] in ("cache layer", "precomputed")
    static = by_name["static_memory"]["details"]
    # the static clip is a view: its storage is one frame, whatever the clip length
    assert static["batch_storage_bytes"] == static["one_frame_storage_bytes"]
    assert static["batch_shape"][2] == data["preset"]["static_frames"]
    # guidance is batched: one transformer call per denoising step
    assert by_name["step_cache"]["details"]["transformer_calls"] == data["preset"]["infer_steps"]


def test_only_selects_cases_and_unknown_name_is_refused(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "--smoke", "--only", "static_memory", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [c["name"] for c in data["cases"]] == ["static_memory"]
    with pytest.raises(SystemExit):
        main(["bench", "--only", "no_such_case"])
    assert "invalid choice" in capsys.readouterr().err
    assert main(["bench", "--smoke", "--repeats", "0"]) == 2


def test_spread_and_ratio_maths():
    s = Spread.of([3.0, 1.0, 2.0, 4.0])
    assert (s.median, s.min, s.max) == (2.5, 1.0, 4.0)
    assert (s.q1, s.q3) == (1.75, 3.25)  # inclusive quartiles of 1, 2, 3, 4
    one = Spread.of([0.7])
    assert (one.median, one.q1, one.q3) == (0.7, 0.7, 0.7)
    timing = ABTiming(a_seconds=[2.0, 4.0, 1.0], b_seconds=[1.0, 1.0, 3.0])
    assert timing.ratios == [0.5, 0.25, 3.0]
    result = CaseResult.from_timing("x", "d", "A", "B", timing, Target("<=", 0.5))
    assert result.ratio.median == 0.5 and result.met is True
    assert Target(">=", 0.9).met(0.89) is False and Target(">=", 0.9).met(0.9) is True
    assert Target("report").met(123.0) is None
    assert "0.500" in format_table([result]) and "yes" in format_table([result])


def test_interleave_alternates_order_and_counts_calls():
    import torch

    calls: list[str] = []
    timing = interleave(lambda: calls.append("a"), lambda: calls.append("b"), rounds=3,
                        device=torch.device("cpu"), inner=2, warmup=1)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] + ["b", "b", "a", "a"] + ["a", "a", "b", "b"]
    assert len(timing.a_seconds) == len(timing.b_seconds) == 3


def test_cli_case_names_match_the_runner():
    """`bench --help` lists the cases without importing torch; the list must be the runner's."""
    from ufo_video.bench.cli import CASE_NAMES
    from ufo_video.bench.runner import CASES

    assert CASE_NAMES == tuple(CASES)
