"""`ufo-video demo`: the quick plan end to end through the CLI, plus the verdict and chart maths."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from ufo_video.cli import main
from ufo_video.demo import findings, plan, steps, svg
from ufo_video.eval import trend_verdict
from ufo_video.demo.dataset import training_metadata
from ufo_video.demo.report import render_html
from ufo_video.errors import UfoError
from ufo_video.eval.summary import trend


def _numbers(value, where="report"):
    """Every number in a JSON value, with its location."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{where}[{i}]")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, int, str]:
    """One quick demo for the module, forced onto the random tiny model (whether or not the
    shipped base exists), so the banner path is what is tested."""
    out = tmp_path_factory.mktemp("demo") / "out"
    mp = pytest.MonkeyPatch()
    mp.setattr(plan, "TINY_BASE_DIR", out.parent / "no-such-base")
    try:
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = main(["demo", "--out", str(out), "--quick"])
    finally:
        mp.undo()
    return out, code, buf.getvalue()


def test_quick_demo_writes_report_videos_and_finite_numbers(quick_run):
    out, code, printed = quick_run
    assert code == 0
    for n in range(1, 9):
        assert f"[{n}/8] done in" in printed
    report = json.loads((out / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-finite {c}"))
    bad = [(where, v) for where, v in _numbers(report) if not math.isfinite(v)]
    assert not bad
    q = plan.QUICK
    assert len(report["videos"]) == len(q.modes) * len(q.prompts) * len(q.weights)
    for rec in report["videos"]:
        video = out / rec["file"]
        assert video.is_file() and video.stat().st_size > 0, video
        assert set(rec["metrics"]) >= {"ssim", "warp_error", "flow_px"}
    for mode in q.modes:
        assert (out / "videos" / f"{mode}-prompt0" / "grid.mp4").is_file()
        assert (out / "videos" / f"{mode}-prompt0" / "grid.gif").is_file()
    assert [s for s, _ in report["training"]["losses"]] == list(range(1, q.train_steps + 1))
    assert Path(report["training"]["lora"]).is_file()
    assert list(report["timings"]) == ["base_model", "dataset", "check", "train", "generate", "evaluate", "sweep", "report"]
    assert report["total_seconds"] >= sum(report["timings"].values()) - 1e-6
    assert report["machine"]["cpu_count"] >= 1 and "load_average_end" in report["machine"]
    # the verdict is the trend's own answer, not a constant
    expected = all(
        report["trend"]["all"]["metrics"][m]["non_decreasing" if want == "up" else "non_increasing"]
        for m, want in trend_verdict.EXPECTED.items()
    )
    assert report["verdict"]["holds"] is expected
    assert ("HOLDS" if expected else "does NOT hold") in report["verdict"]["statement"]


def test_quick_demo_saves_several_checkpoints_and_reports_a_multi_seed_sweep(quick_run):
    """The chooser in the demo: every checkpoint of the run x the sweep weights on prompts x seeds,
    paired with the base, and its recommendation (here, 3 training steps: an honest "none")."""
    out, _, _ = quick_run
    q = plan.QUICK
    report = json.loads((out / "report.json").read_text())
    ckpts = sorted(p.name for p in (out / "train").glob("checkpoint-*.safetensors"))
    assert len(ckpts) == q.checkpoints >= 2
    sw = report["sweep"]
    assert sorted(sw["checkpoints"]) == ckpts and sw["samples"] == q.sweep_prompts * len(q.sweep_seeds) >= 2
    rec = sw["recommendation"]
    assert rec["pairs"] == sw["samples"] and len(rec["candidates"]) == q.checkpoints * (len(q.sweep_weights) - 1)
    assert rec["checkpoint"] is None and "no setting beats the base reliably" in rec["reason"]
    record = json.loads((out / "sweep" / "sweep.json").read_text())
    assert {v["seed"] for v in record["videos"]} == set(q.sweep_seeds) and (out / sw["html"]).is_file()
    html = (out / "report.html").read_text()
    assert "Which checkpoint, which weight?" in html and "no setting beats the base reliably" in html


def test_quick_demo_data_check_reports_and_excludes_the_broken_file(quick_run):
    out, _, printed = quick_run
    report = json.loads((out / "report.json").read_text())
    check = report["dataset"]["check"]
    assert "[unreadable]" in check["summary"] and "videos/broken.mp4" in check["summary"]
    assert [e["file_path"] for e in check["excluded"]] == ["videos/broken.mp4"]
    kept = json.loads(Path(check["train_metadata"]).read_text())
    assert len(kept) == plan.QUICK.images + plan.QUICK.videos
    assert all(e["file_path"] != "videos/broken.mp4" for e in kept)


def test_quick_demo_report_is_self_contained_and_shows_the_random_model_banner(quick_run):
    out, _, printed = quick_run
    html = (out / "report.html").read_text()
    report = json.loads((out / "report.json").read_text())
    assert report["base_model"]["random"] is True and "RANDOM TINY MODEL" in report["base_model"]["banner"]
    assert '<div class="banner">RANDOM TINY MODEL' in html and "RANDOM TINY MODEL" in printed
    assert "<script" not in html and "<link" not in html and "@import" not in html
    # the only URL is the SVG namespace; media are relative paths or data URIs
    assert set(re.findall(r"https?://[^\s\"']+", html)) == {"http://www.w3.org/2000/svg"}
    for src in re.findall(r'<(?:video|img)[^>]* src="([^"]+)"', html):
        assert src.startswith("data:image/gif;base64,") or (out / src).is_file(), src
    assert html.count("<video") == len(report["videos"])
    assert html.count("<svg") == 4  # ssim, warp_error, flow_px, training loss
    # with a trained base there is no banner
    report["base_model"].update(random=False, banner=None)
    assert "RANDOM TINY MODEL" not in render_html(report, out)


def test_base_model_uses_the_shipped_folder_when_present_and_the_models_tasks(tiny_models, tmp_path):
    base = steps.base_model(tmp_path, base_dir=tiny_models["diffusers"])
    assert base["path"] == str(tiny_models["diffusers"]) and base["random"] is False and base["banner"] is None
    assert base["modes"] == ["t2v", "i2v"]
    assert not (tmp_path / "tiny-random").exists()
    # a text-to-video model makes only t2v videos (no image-to-video rows)
    assert steps.base_model(tmp_path, base_dir=tiny_models["t2v"])["modes"] == ["t2v"]
    with pytest.raises(UfoError, match="folder not found"):
        steps.base_model(tmp_path, model=tmp_path / "nope")


def test_base_path_is_one_constant_under_the_package_assets():
    assert plan.TINY_BASE_DIR.parts[-3:] == ("ufo_video", "assets", "tiny-base")


# ---------------------------------------------------------------------------- maths


def _trend(values: dict[str, list[float]], weights=(0.0, 0.5, 1.0)) -> dict:
    rows = [(w, {k: v[i] for k, v in values.items()}) for i, w in enumerate(weights)]
    return trend(rows)


def test_verdict_holds_only_when_every_expected_direction_holds():
    good = _trend({"ssim": [0.90, 0.95, 0.95], "warp_error": [0.3, 0.2, 0.1], "flow_px": [2.0, 1.0, 1.0]})
    v = trend_verdict.verdict({"all": good})
    assert v["holds"] is True and "HOLDS" in v["statement"]
    bad = _trend({"ssim": [0.90, 0.95, 0.94], "warp_error": [0.3, 0.2, 0.1], "flow_px": [2.0, 1.0, 1.5]})
    v = trend_verdict.verdict({"all": bad, "t2v": good})
    assert v["holds"] is False and "does NOT hold" in v["statement"]
    ssim, warp, flow = v["groups"]["all"]
    assert ssim["holds"] is False and len(ssim["violations"]) == 1
    assert ssim["violations"][0]["from"] == 0.5 and ssim["violations"][0]["to"] == 1.0
    assert ssim["violations"][0]["step"] == pytest.approx(-0.01)
    assert warp["holds"] is True and warp["violations"] == [] and warp["change"] == pytest.approx(-0.2)
    assert flow["holds"] is False and flow["violations"][0]["step"] == pytest.approx(0.5)
    assert all(c["holds"] for c in v["groups"]["t2v"])


def test_motion_note_says_when_the_base_model_barely_moves():
    still = [{"weight": 0.0, "metrics": {"flow_px": 0.02, "is_dynamic": False}},
             {"weight": 1.0, "metrics": {"flow_px": 0.01, "is_dynamic": False}}]  # fmt: skip
    text = findings.motion_note(still, size=64, fps=8)
    assert "0.02 px" in text and "0 of 1" in text and "barely moves" in text
    moving = [{"weight": 0.0, "metrics": {"flow_px": 3.0, "is_dynamic": True}}]
    assert "barely moves" not in findings.motion_note(moving, size=64, fps=8)


def test_svg_scale_ticks_and_chart_structure():
    assert svg.scale(5, 0, 10, 100, 200) == 150
    assert svg.scale(0, 0, 10, 200, 100) == 200  # inverted axis (SVG y grows downwards)
    assert svg.scale(3, 3, 3, 0, 10) == 5  # empty range: middle
    assert svg.tick_label(0.99931, 0.00001) == "0.999310"
    assert svg.tick_label(1.25, 0.25) == "1.25"
    assert svg.tick_label(120.0, 20.0) == "120"
    chart = svg.line_chart({"a": [1.0, 2.0, 3.0], "b": [3.0, 2.0, 1.0]}, [0, 0.2, 1], "t", "x", "y", categorical=True)
    root = ET.fromstring(chart)
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}polyline")) == 2 and len(root.findall(f"{ns}circle")) == 6
    xs = [float(p.split(",")[0]) for p in root.findall(f"{ns}polyline")[0].get("points").split()]
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1])  # categorical: evenly spaced


def test_training_metadata_drops_exactly_the_flagged_indices(tmp_path):
    meta = tmp_path / "metadata.json"
    entries = [{"file_path": f"f{i}.png", "text": str(i)} for i in range(4)]
    meta.write_text(json.dumps(entries))
    path, excluded = training_metadata(meta, {1, 3}, tmp_path / "train.json")
    assert json.loads(path.read_text()) == [entries[0], entries[2]]
    assert excluded == [entries[1], entries[3]]


def test_out_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    target = tmp_path / "report.html"
    target.write_text("not a folder")
    assert main(["demo", "--out", str(target), "--quick"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_quick_demo_runs_on_the_shipped_tiny_base_by_default(tmp_path):
    import contextlib
    import io

    out = tmp_path / "out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["demo", "--out", str(out), "--quick"]) == 0
    report = json.loads((out / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-finite {c}"))
    assert report["base_model"]["path"] == str(plan.TINY_BASE_DIR)
    assert report["base_model"]["random"] is False and report["base_model"]["banner"] is None
    assert "RANDOM TINY MODEL" not in buf.getvalue() and "RANDOM TINY MODEL" not in (out / "report.html").read_text()
    assert not (out / "tiny-random").exists()


def test_demo_dataset_videos_decode_identically_across_runs(tmp_path):
    """The demo's numbers are only repeatable if its training data is: its mp4s are lossless
    (`write_video(lossless=True)`), so they decode to the same pixels every time; libx264's lossy
    mode sometimes encodes the same frames differently."""
    import av

    from ufo_video.demo.dataset import make_dataset, scene_frames

    for i in range(4):
        make_dataset(tmp_path / f"run{i}", plan.FULL)  # 4 videos each
    names = sorted(p.name for p in (tmp_path / "run0" / "videos").glob("*.mp4") if p.name != "broken.mp4")
    assert len(names) == plan.FULL.videos

    def pixels(path):
        with av.open(str(path)) as container:
            return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])

    for name in names:
        decoded = [pixels(tmp_path / f"run{i}" / "videos" / name) for i in range(4)]
        for other in decoded[1:]:
            np.testing.assert_array_equal(decoded[0], other, err_msg=name)
    assert decoded[0].shape == (plan.FULL.media_frames, plan.FULL.media_size, plan.FULL.media_size, 3)


def test_quick_demo_report_reads_well(quick_run):
    """Issue 14's report fixes: big enough videos, one row per prompt (the GIF folded away), the
    data check not cut off, "1 problem", a loss axis that does not go below zero, and a quick
    run's trend shown as measured, not judged."""
    out, _, _ = quick_run
    html = (out / "report.html").read_text()
    report = json.loads((out / "report.json").read_text())
    widths = {int(w) for w in re.findall(r'<video [^>]*width="(\d+)"', html)}
    assert widths and min(widths) >= 240
    rows = {(r["mode"], r["prompt_index"]) for r in report["videos"]}
    assert html.count("<details><summary>the same row as one labelled GIF") == len(rows)
    assert "white-space:pre-wrap" in html
    summary = report["dataset"]["check"]["summary"]
    assert "1 problems" not in summary and "(1 problem)" in summary
    loss_svg = html[html.index('aria-label="training loss'):]
    loss_svg = loss_svg[:loss_svg.index("</svg>")]
    ticks = re.findall(r'text-anchor="end" font-size="10">([^<]+)</text>', loss_svg)
    assert ticks and all(float(t) >= 0 for t in ticks)
    assert report["verdict"]["judged"] is False and report["verdict"]["statement"].startswith("Quick run: ")
    assert '<div class="note"><p>Quick run: ' in html


def test_out_that_cannot_be_written_or_holds_other_files_is_refused_before_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "--out", str(blocker / "demo"), "--quick"]) == 2
    assert f"--out folder {blocker / 'demo'} is not writable" in capsys.readouterr().err
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    assert main(["demo", "--out", str(other), "--quick"]) == 2
    assert "holds no earlier demo" in capsys.readouterr().err
    assert (other / "thesis.tex").read_text() == "precious" and len(list(other.iterdir())) == 1
