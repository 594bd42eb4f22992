"""Two-expert models and LoRA stacks in `ufo-video sweep` and `generate`, on a tiny Wan 2.2 A14B:
files are paired per expert (by `ufo_expert` and checkpoint step), each row applies its pair,
per-expert scales reach the files, a stack is in every video (the base included; asserted from
the sidecars), generate names each LoRA's expert, warns about a bare expert and records the
routing; ambiguous input is refused with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ufo_video.cli import main

FAST = ["--sample-size", "32", "32", "--video-length", "5", "--steps", "2", "--dtype", "fp32", "--seed", "1"]


def expert_loras(model_dir: Path, out: Path, expert: str, steps=(1, 2), name: str = "checkpoint-{}") -> list[Path]:
    """`checkpoint-N.safetensors` files for one expert of the model (random lora_B), carrying its
    `ufo_expert` metadata as a training run's files do."""
    from ufo_video.config import LoraSection
    from ufo_video.lora.formats import save_lora
    from ufo_video.lora.inject import add_lora
    from ufo_video.models.registry import load_model

    model = load_model(model_dir, components=("transformer", "transformer_2"), dtype=torch.float32)
    model.activate_expert(model.select_expert(expert))
    add_lora(model, LoraSection(rank=2, network_alpha=2.0, target_modules="attention"), "t")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i, step in enumerate(steps):
        g = torch.Generator().manual_seed(100 * i + len(expert))
        with torch.no_grad():
            for pname, param in model.transformer.named_parameters():
                if "lora_B" in pname:
                    param.copy_(torch.randn(param.shape, generator=g) * 0.5)
        files.append(save_lora(out / (name.format(step) + ".safetensors"), model, "t", {}))
    return files


@pytest.fixture(scope="module")
def a14b(tmp_path_factory) -> dict:
    from ufo_video.models.wan.tiny import make_tiny_wan

    root = tmp_path_factory.mktemp("a14b")
    model = make_tiny_wan(root / "model", "a14b", seed=0)
    high = expert_loras(model, root / "run-high", "transformer")
    low = expert_loras(model, root / "run-low", "transformer_2")
    stack = expert_loras(model, root / "stack", "transformer", steps=(9,), name="distill-{}")[0]
    return {"model": model, "high": root / "run-high", "low": root / "run-low", "high_files": high, "low_files": low,
            "stack": stack, "plain": without_expert(stack, root / "plain" / "distill-low.safetensors")}  # fmt: skip


def without_expert(path: Path, out: Path) -> Path:
    """A copy of a LoRA file without `ufo_expert` metadata (as files made by other tools come)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), "pt") as f:
        meta = {k: v for k, v in (f.metadata() or {}).items() if k != "ufo_expert"}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(load_file(str(path)), str(out), meta)
    return out


def test_a14b_sweep_pairs_files_per_expert_with_scales_and_a_stack_in_every_row(a14b, tmp_path, capsys) -> None:
    out = tmp_path / "sw"
    args = ["sweep", "--model", str(a14b["model"]), "--prompt", "a cat", *FAST, "--lora", str(a14b["high"]),
            "--lora", str(a14b["low"]), "--weights", "0,0.5", "--expert-scale", "transformer_2=2",
            "--base-lora", f"{a14b['stack']}:0.7", "--base-lora", f"{a14b['plain']}:0.4@transformer_2",
            "--out-dir", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    rec = json.loads((out / "sweep.json").read_text())
    # two rows (one per step), each the pair; not four competing single files
    assert rec["checkpoints"] == ["checkpoint-1", "checkpoint-2"]
    by_row = {r["checkpoint"]: r for r in rec["rows"]}
    assert [Path(f).parent.name for f in by_row["checkpoint-2"]["loras"]] == ["run-high", "run-low"]
    assert by_row["checkpoint-2"]["scales"] == [1.0, 2.0]
    stack = str(a14b["stack"].resolve())
    plain = str(a14b["plain"].resolve())
    assert rec["stack"] == [{"file": stack, "weight": 0.7}, {"file": plain, "weight": 0.4, "expert": "transformer_2"}]
    assert len(rec["videos"]) == 4
    for v in rec["videos"]:
        side = json.loads((out / v["sidecar"]).read_text())
        loras = {Path(x["path"]).parent.name: x["weight"] for x in side["settings"]["loras"]}
        # the stack is in every video, the base (weight 0) included, at its weight
        assert loras["stack"] == 0.7 and loras["plain"] == 0.4, v["file"]
        assert [x.get("expert") for x in side["settings"]["loras"]][-2:] == [None, "transformer_2"]  # named by @
        # the row's pair at (w, 2w): high-noise file at the weight, low-noise at twice it
        assert (loras["run-high"], loras["run-low"]) == (v["weight"], 2 * v["weight"])
        route = {Path(r["file"]).parent.name: (r["expert"], r["weight"]) for r in side["lora_routing"]}
        assert route == {"run-high": ("transformer", v["weight"]), "run-low": ("transformer_2", 2 * v["weight"]),
                         "stack": ("transformer", 0.7), "plain": ("transformer_2", 0.4)}  # fmt: skip
        assert {x["expert"] for x in v["loras"]} == {"transformer", "transformer_2"}
    # the pair's two settings differ from the base; weight 0 is one base video shared by both rows
    m = {(v["checkpoint"], v["weight"]): v["metrics"] for v in rec["videos"]}
    assert m[("checkpoint-1", 0.0)] == m[("checkpoint-2", 0.0)] and m[("checkpoint-1", 0.5)] != m[("checkpoint-2", 0.5)]
    assert "base: the stack, no UFO" in printed and "stack in every video, the base included" in printed
    assert "distill-low.safetensors x 0.4 -> transformer_2; every gain and motion kept is against the same stack" in printed
    assert "checkpoint-2: checkpoint-2.safetensors -> transformer + checkpoint-2.safetensors -> transformer_2 at 2 x weight" in printed
    assert "runs without a LoRA" not in printed  # both experts hold a UFO file
    assert "stack in every video" in (out / "sweep.html").read_text()


def test_a14b_generate_names_each_lora_expert_warns_for_a_bare_expert_and_records_the_routing(a14b, tmp_path, capsys) -> None:
    high = a14b["high_files"][0]
    out = tmp_path / "one.mp4"
    assert main(["generate", "--model", str(a14b["model"]), "--prompt", "a cat", *FAST, "--lora", f"{high}:0.3",
                 "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "LoRA attached: checkpoint-1.safetensors x 0.3 -> transformer (timesteps 875-1000)" in printed
    assert "warning: the expert transformer_2 (timesteps 0-875) runs without a LoRA while transformer has one" in printed
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["lora_routing"] == [{"file": str(high.resolve()), "weight": 0.3, "expert": "transformer",
                                     "expert_timesteps": "875-1000"}]  # fmt: skip
    low = a14b["low_files"][0]
    both = tmp_path / "both.mp4"
    assert main(["generate", "--model", str(a14b["model"]), "--prompt", "a cat", *FAST, "--lora", f"{high}:0.3",
                 "--lora", f"{low}:0.2", "--out", str(both)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "-> transformer_2 (timesteps 0-875)" in printed and "runs without" not in printed
    routed = json.loads(both.with_suffix(".json").read_text())["lora_routing"]
    assert [(r["expert"], r["weight"]) for r in routed] == [("transformer", 0.3), ("transformer_2", 0.2)]
    # a file without ufo_expert goes where @ names it; the low-noise expert then has a LoRA but no UFO
    mixed = tmp_path / "mixed.mp4"
    assert main(["generate", "--model", str(a14b["model"]), "--prompt", "a cat", *FAST, "--lora", f"{high}:0.3",
                 "--lora", f"{a14b['plain']}:1@transformer_2", "--out", str(mixed)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "distill-low.safetensors x 1 -> transformer_2 (timesteps 0-875)" in printed
    assert "warning: the expert transformer_2 (timesteps 0-875) runs without a UFO LoRA" in printed
    side = json.loads(mixed.with_suffix(".json").read_text())
    assert side["settings"]["loras"][1]["expert"] == "transformer_2" and "expert" not in side["settings"]["loras"][0]
    # the sidecar makes the same video again, with the file on the same expert
    assert main(["generate", "--from-sidecar", str(mixed.with_suffix(".json"))]) == 0
    assert "reproduced exactly" in capsys.readouterr().out
    assert main(["generate", "--model", str(a14b["model"]), "--prompt", "a cat", *FAST, "--lora", f"{high}@nope",
                 "--out", str(tmp_path / "x.mp4")]) == 2  # fmt: skip
    assert "is for the expert 'nope' (as given after @)" in capsys.readouterr().err


def test_ambiguous_pairs_and_bad_scales_are_refused_with_one_line(a14b, tmp_path, capsys) -> None:
    import shutil

    odd = tmp_path / "odd-low"
    odd.mkdir()
    shutil.copy(a14b["low_files"][0], odd / "checkpoint-7.safetensors")  # a step the high run lacks
    shutil.copy(a14b["low_files"][1], odd / "checkpoint-8.safetensors")
    base = ["sweep", "--model", str(a14b["model"]), "--prompt", "x", "--out-dir", str(tmp_path / "o")]
    cases = [
        (["--lora", str(a14b["high"]), "--lora", str(odd)], "cannot pair the LoRA files by expert"),
        (["--lora", str(a14b["high"]), "--lora", str(a14b["low"]), "--expert-scale", "nope=2"], "the model's experts are"),
        (["--lora", str(a14b["high"]), "--expert-scale", "transformer_2=x"], "write EXPERT=FACTOR"),
        (["--lora", str(a14b["high"]), "--base-lora", str(a14b["high_files"][0])], "is also a swept --lora"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_pairing_rules_without_a_model(tmp_path) -> None:
    from safetensors.torch import save_file

    from ufo_video.errors import UfoError
    from ufo_video.infer.sweep_pairs import plan_rows

    def lora(path: Path, expert: str | None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"a": torch.zeros(1)}, str(path), {"ufo_expert": expert} if expert else {})
        return path

    experts = ["transformer", "transformer_2"]
    h, lo = lora(tmp_path / "h" / "mine-high.safetensors", "transformer"), lora(tmp_path / "l" / "mine-low.safetensors", "transformer_2")
    files, rows, ex = plan_rows([lo, h], experts, ["a", "b"])
    assert files == [h, lo] and [(r.label, r.files) for r in rows] == [("mine-high+mine-low", (0, 1))] and ex == experts
    files, rows, ex = plan_rows([h], experts, ["x"])  # one expert's files alone: rows of single files
    assert [(r.label, r.files) for r in rows] == [("x", (0,))] and ex == ["transformer"]
    bare = lora(tmp_path / "bare.safetensors", None)
    with pytest.raises(UfoError, match="names no expert"):
        plan_rows([h, bare], experts, ["a", "b"])
    two = lora(tmp_path / "h2" / "other.safetensors", "transformer")
    with pytest.raises(UfoError, match="cannot pair"):
        plan_rows([h, two, lo], experts, ["a", "b", "c"])
    # a single-expert model: one row per file, no metadata read
    assert [r.files for r in plan_rows([h, lo], ["transformer"], ["a", "b"])[1]] == [(0,), (1,)]


def test_lora_argument_names_an_expert_after_at(tmp_path) -> None:
    from ufo_video.infer.settings import LoraSpec, parse_lora_arg

    assert parse_lora_arg("x.safetensors:0.5@transformer_2", 0.15) == LoraSpec("x.safetensors", 0.5, "transformer_2")
    assert parse_lora_arg("x.safetensors@transformer_2", 0.15) == LoraSpec("x.safetensors", 0.15, "transformer_2")
    assert parse_lora_arg("x.safetensors:0.5", 0.15) == LoraSpec("x.safetensors", 0.5)
    odd = tmp_path / "me@home.safetensors"  # an existing file is a path, whatever it contains
    odd.write_bytes(b"")
    assert parse_lora_arg(str(odd), 0.15) == LoraSpec(str(odd), 0.15)
    assert parse_lora_arg(f"{tmp_path}/a@b/c.safetensors", 1.0).expert is None  # "@" inside a folder name
