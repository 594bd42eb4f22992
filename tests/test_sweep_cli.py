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
    # one (prompt, seed) gives no interval: the rule never recommends from a single pair
    r = rec["recommendation"]
    assert r["checkpoint"] is None and r["pairs"] == 1 and "no setting beats the base reliably" in r["reason"]
    assert "recommended: the base model" in printed and "rule:" in printed and "checkpoint-200" in printed
    with av.open(str(out / "grid.mp4")) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    # weights band on top; names in a column on the left (14 chars x 6 px + 6), two rows of 64 px
    assert frame.shape == (14 + 2 * 64 + 2, 90 + 3 * 64 + 2 * 2, 3)
    html = (out / "sweep.html").read_text()
    assert "Recommended:" in html and "expected UFO trend" in html and "only 2 denoising steps" in html
    assert "<svg" not in html or ">checkpoint-100</text>" in html  # one pair: no intervals to chart
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

    """The legend says what the settings table says (the checkpoint labels); an over-long one keeps its end."""
    long = "a-very-long-training-folder-name-indeed/checkpoint-100"
    assert legend_names(["a/checkpoint-100", "b/checkpoint-100", long, "x" + long[1:], "short"]) == {
        "a/checkpoint-100": "a/checkpoint-100", "b/checkpoint-100": "b/checkpoint-100", long: "~" + long[-39:],
        "x" + long[1:]: "4: ~" + long[-39:], "short": "short"}  # fmt: skip


def zero_lora(run_dir: Path, out: Path) -> Path:
    """A LoRA with no effect: the first checkpoint with every lora_B set to 0."""
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    tensors = load_file(run_dir / "checkpoint-100.safetensors")
    with safe_open(str(run_dir / "checkpoint-100.safetensors"), "pt") as f:
        meta = f.metadata()
    save_file({k: (torch.zeros_like(v) if "lora_B" in k or "lora_up" in k else v) for k, v in tensors.items()}, str(out), meta)
    return out


def test_sweep_over_prompts_and_seeds_pairs_with_the_base_and_never_recommends_no_effect_or_noise(
        run_dir: Path, tmp_path: Path, capsys) -> None:  # fmt: skip
    """2 prompts x 2 seeds: a LoRA with no effect (differences exactly 0) and two random LoRAs
    (their effect is noise) are never recommended; every table number is `eval` on the written file."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a red square moves right over a blue plain background"}\n'
                       '{"prompt": "a blue circle moves down over a yellow plain background"}\n')  # fmt: skip
    nothing = zero_lora(run_dir, tmp_path / "nothing.safetensors")
    out = tmp_path / "sw"
    args = ["sweep", "--model", str(TINY_BASE), "--prompts", str(prompts), "--seeds", "1,2", *FAST[:-2],
            "--lora", str(nothing), "--lora", str(run_dir), "--weights", "0,1", "--out-dir", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "will take about" in printed and "[16/16]" in printed  # estimate up front, progress as it runs
    rec = json.loads((out / "sweep.json").read_text())
    assert [(s["name"], s["seed"]) for s in rec["samples"]] == [("p1-seed1", 1), ("p1-seed2", 2), ("p2-seed1", 1), ("p2-seed2", 2)]
    r = rec["recommendation"]
    assert r["checkpoint"] is None and "no setting beats the base reliably" in r["reason"] and r["pairs"] == 4
    cands = {c["checkpoint"]: c for c in r["candidates"]}
    zero = cands["nothing"]
    assert zero["n"] == 4 and all(d["mean"] == 0 and d["low"] == 0 and d["high"] == 0 for d in zero["differences"].values())
    assert not zero["reliable"] and zero["motion_kept"]["ratio"] == 1
    for name in ("checkpoint-100", "checkpoint-200"):
        assert not cands[name]["eligible"] and cands[name]["gain"]["low"] is not None
    assert r["simultaneous_level"] == pytest.approx(1 - 0.05 / 3)
    assert r["min_effect"] > 0 and "seed-to-seed" in r["min_effect_source"]
    # sidecars record each sample's own prompt and seed
    video = next(v for v in rec["videos"] if v["checkpoint"] == "checkpoint-200" and v["sample"] == "p2-seed2")
    side = json.loads((out / video["sidecar"]).read_text())
    assert side["request"]["seed"] == 2 and side["request"]["prompt"].startswith("a blue circle")
    assert sorted(g["file"] for g in rec["grids"]) == [f"grid-p{p}-seed{s}.mp4" for p in (1, 2) for s in (1, 2)]
    # the table equals `ufo-video eval` on the files it wrote, exactly
    files = [v["file"] for v in rec["videos"][:3]]
    assert main(["eval", "--json", *[str(out / f) for f in files]]) == 0
    report = json.loads(capsys.readouterr().out)
    for f, row in zip(files, report["videos"]):
        assert row["metrics"] == next(v["metrics"] for v in rec["videos"] if v["file"] == f)
    html = (out / "sweep.html").read_text()
    assert 'class="errbar"' in html and "no setting beats the base reliably" in html and "Rule:" in html
    assert "judged" in html and rec["trend_intervals"]["statement"] in html.replace("&gt;", ">").replace("&#x27;", "'")


def test_sweep_default_prompts_and_their_errors(run_dir: Path, tmp_path: Path, capsys) -> None:
    from ufo_video.infer.sweep_prompts import DEFAULT_I2V, DEFAULT_T2V, caption_prompts

    kinds = [k for k, *_ in DEFAULT_T2V]
    assert kinds.count("static") >= 2 and kinds.count("dynamic") >= 2 and {k for k, *_ in DEFAULT_I2V} == {"static", "dynamic"}
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps([{"file_path": f"v{i}.mp4", "text": f"caption {i}"} for i in range(10)]))
    assert caption_prompts(meta, 3) == ["caption 0", "caption 4", "caption 9"]  # spread over the file (round half even)
    for extra, message in ((["--seeds", "1,x"], "--seeds"), (["--prompt", "a", "--prompts", str(meta)], "one source of prompts"),
                           (["--prompts-from-captions", str(tmp_path / "none.json")], "metadata file not found")):  # fmt: skip
        assert main(["sweep", "--model", str(TINY_BASE), "--lora", str(run_dir), *extra, "--out-dir", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    # i2v default set: start images drawn deterministically into the sweep's folder
    out = tmp_path / "i2v"
    assert main(["sweep", "--model", str(TINY_BASE), "--default-prompts", "i2v", *FAST, "--lora",
                 str(run_dir / "checkpoint-100.safetensors"), "--weights", "0", "--out-dir", str(out)]) == 0  # fmt: skip
    rec = json.loads((out / "sweep.json").read_text())
    assert len(rec["samples"]) == len(DEFAULT_I2V) and all(Path(s["image"]).is_file() for s in rec["samples"])
    assert rec["recommendation"] is None and "using the built-in i2v prompt set" in capsys.readouterr().out
