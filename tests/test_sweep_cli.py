"""`ufo-video sweep` over two checkpoints of a run x weights on the shipped tiny base: videos,
grid rows, metrics, the recommendation by the stated rule, sweep.html, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
import torch

from ufo_video.cli import main

REPO = Path(__file__).resolve().parent.parent
TINY_BASE = REPO / "src" / "ufo_video" / "assets" / "tiny-base"
FAST = ["--sample-size", "64", "64", "--video-length", "9", "--steps", "2", "--dtype", "fp32", "--seed", "3"]


def make_run_checkpoints(out: Path, steps=(100, 200)) -> Path:
    """A fake training output_dir: checkpoint-N.safetensors LoRAs for the tiny base (random lora_B)."""
    from ufo_video.config import LoraSection
    from ufo_video.lora.formats import save_lora
    from ufo_video.lora.inject import add_lora
    from ufo_video.models.registry import load_model

    model = load_model(TINY_BASE, components=("transformer",), dtype=torch.float32)
    add_lora(model, LoraSection(rank=4, network_alpha=4.0, target_modules="attention"), "t")
    out.mkdir(parents=True, exist_ok=True)
    for i, step in enumerate(steps):
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for name, param in model.transformer.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=g) * 0.3)
        save_lora(out / f"checkpoint-{step}.safetensors", model, "t", {"note": "test"})
    (out / "losses.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s, "lr": 1e-4}) + "\n" for s in range(1, 201)))
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run_checkpoints(tmp_path_factory.mktemp("run") / "ufo-run")


def test_sweep_two_checkpoints_writes_table_recommendation_and_html(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sw"
    assert main(["sweep", "--model", str(TINY_BASE), "--prompt", "a red square moves right", *FAST,
                 "--lora", str(run_dir), "--weights", "0,0.5,2", "--out-dir", str(out), "--keep-motion", "0"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    rec = json.loads((out / "sweep.json").read_text())
    assert rec["checkpoints"] == ["checkpoint-100", "checkpoint-200"] and rec["weights"] == [0.0, 0.5, 2.0]
    files = [v["file"] for v in rec["videos"]]
    assert files[:3] == ["checkpoint-100/alpha_0.0.mp4", "checkpoint-100/alpha_0.5.mp4", "checkpoint-100/alpha_2.0.mp4"]
    assert all((out / f).is_file() for f in files)
    sidecar = json.loads((out / files[1]).with_suffix(".json").read_text())
    assert sidecar["runtime"]["threads"] >= 1  # results can differ with the thread count: recorded
    by = {(v["checkpoint"], v["weight"]): v["metrics"] for v in rec["videos"]}
    # weight 0 is the base model for both checkpoints: generated once, same numbers
    assert by[("checkpoint-100", 0.0)] == by[("checkpoint-200", 0.0)]
    assert by[("checkpoint-100", 2.0)] != by[("checkpoint-200", 2.0)]
    # the stated rule (keep_motion 0: every setting eligible) = lowest warp_error, if it beats the base
    r = rec["recommendation"]
    nonzero = {k: m["warp_error"] for k, m in by.items() if k[1] > 0}
    best = min(nonzero, key=lambda k: (nonzero[k], k[1]))
    if nonzero[best] < by[("checkpoint-100", 0.0)]["warp_error"]:
        assert (r["checkpoint"], r["weight"]) == best
    else:
        assert r["checkpoint"] is None
    assert "recommended:" in printed and "rule:" in printed and "checkpoint-200" in printed
    with av.open(str(out / "grid.mp4")) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert frame.shape == (2 * (14 + 14 + 64), 3 * 64 + 2 * 2, 3)  # two rows, each: name band, weight band, videos
    html = (out / "sweep.html").read_text()
    assert "Recommended:" in html and "<svg" in html and "expected UFO trend" in html and "only 2 denoising steps" in html
    assert ">step 100</text>" in html and ">step 200</text>" in html  # chart legends
    # a second sweep into the same folder is refused unless told
    assert main(["sweep", "--model", str(TINY_BASE), "--prompt", "x", "--lora", str(run_dir), "--weights", "0,1",
                 "--out-dir", str(out)]) == 2  # fmt: skip
    assert "--overwrite" in capsys.readouterr().err
    assert main(["sweep", "--model", str(TINY_BASE), "--prompt", "x", *FAST, "--lora", str(run_dir / "checkpoint-200.safetensors"),
                 "--weights", "0,1", "--out-dir", str(out), "--overwrite"]) == 0  # fmt: skip
    assert json.loads((out / "sweep.json").read_text())["checkpoints"] == ["checkpoint-200"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lora", "nope.safetensors"], "LoRA file not found: nope.safetensors"),
        (["--lora", "{run}", "--weights", "0,-1"], "weights must be finite numbers >= 0"),
        (["--lora", "{run}", "--keep-motion", "3"], "keep_motion"),
        (["--lora", "{run}", "--consistency-metric", "beauty"], "consistency metric 'beauty' is unknown"),
        (["--lora", "{empty}"], "has no checkpoint-N.safetensors"),
    ],
)
def test_sweep_bad_input_is_one_line_naming_it(extra, message, run_dir: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    extra = [e.format(run=run_dir, empty=tmp_path / "empty") for e in extra]
    assert main(["sweep", "--model", str(TINY_BASE), "--prompt", "x", *extra, "--out-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_legend_names_fit_and_stay_unique() -> None:
    from ufo_video.infer.sweep_report import legend_names

    assert legend_names(["checkpoint-100", "a/checkpoint-100", "my-long-lora-name", "short"]) == {
        "checkpoint-100": "step 100", "a/checkpoint-100": "2: step 100", "my-long-lora-name": "my-long-l~", "short": "short"}
