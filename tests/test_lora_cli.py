"""`ufo-video lora inspect | convert | combine | bake` through `ufo_video.cli.main`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from test_lora_support import forward, load_tiny, random_lora_file
from ufo_video.cli import main
from ufo_video.lora.apply import load_loras
from ufo_video.lora.formats import read_lora
from ufo_video.lora.tools import parse_lora_spec


@pytest.fixture(scope="module")
def loras(tiny_models, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-loras")
    model = tiny_models["diffusers"]
    return {
        "a": random_lora_file(model, root / "a.safetensors", rank=4, alpha=2.0, seed=1),
        "b": random_lora_file(model, root / "b.safetensors", rank=3, alpha=6.0, targets="attention", seed=2),
    }


def test_parse_lora_spec() -> None:
    assert parse_lora_spec("x/a.safetensors:0.5") == (Path("x/a.safetensors"), 0.5)
    assert parse_lora_spec("a.safetensors") == (Path("a.safetensors"), 1.0)
    assert parse_lora_spec("C:/x/a.safetensors") == (Path("C:/x/a.safetensors"), 1.0)


def test_inspect_json_with_model(tiny_model: Path, loras, capsys) -> None:
    assert main(["lora", "inspect", str(loras["a"]), "--model", str(tiny_model), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "kohya" and report["ranks"] == {"4": 33} and report["alphas"] == {"2": 33}
    assert report["params"] == 13_312 and report["base_params"] == 61_040
    assert report["matched"] == 33 and report["unmatched"] == [] and report["shape_mismatches"] == []
    assert report["model_targets"]["transformer_blocks.*.attn1.add_q_proj"] == 2
    assert report["metadata"]["note"] == "test"


def test_inspect_text_and_mismatch_exit_code(tiny_model: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "odd.safetensors"
    save_file(
        {
            "lora_unet__proj_out.lora_down.weight": torch.ones(2, 99),
            "lora_unet__proj_out.lora_up.weight": torch.ones(16, 2),
            "lora_unet__blocks_9_x.lora_down.weight": torch.ones(2, 4),
            "lora_unet__blocks_9_x.lora_up.weight": torch.ones(4, 2),
        },
        str(path),
    )
    assert main(["lora", "inspect", str(path), "--model", str(tiny_model)]) == 1
    out = capsys.readouterr().out
    assert "unmatched (1)" in out and "blocks_9_x" in out and "shape mismatches (1)" in out
    assert main(["lora", "inspect", str(path)]) == 0  # without a model only the file is described


def test_inspect_refuses_pickle_cleanly(tmp_path: Path, capsys) -> None:
    torch.save({"a": torch.ones(1)}, tmp_path / "x.pt")
    assert main(["lora", "inspect", str(tmp_path / "x.pt")]) == 2
    assert "pickle" in capsys.readouterr().err


def test_convert_round_trip_default_names_model(loras, tmp_path: Path) -> None:
    """Without --model the bundled 12B configs supply the module names (the tiny blocks exist there)."""
    peft, kohya = tmp_path / "p.safetensors", tmp_path / "k.safetensors"
    assert main(["lora", "convert", str(loras["a"]), str(peft), "--to", "peft"]) == 0
    assert main(["lora", "convert", str(peft), str(kohya), "--to", "kohya"]) == 0
    assert "transformer.transformer_blocks.1.txt_ff.net.0.proj.lora_B.weight" in load_file(str(peft))
    orig, back = load_file(str(loras["a"])), load_file(str(kohya))
    assert orig.keys() == back.keys()
    assert all(torch.equal(orig[k], back[k]) and orig[k].dtype == back[k].dtype for k in orig)


def test_combine_equals_applying_separately(tiny_model: Path, loras, tmp_path: Path) -> None:
    out = tmp_path / "ab.safetensors"
    args = ["lora", "combine", f"{loras['a']}:0.5", f"{loras['b']}:1.0", "--out", str(out), "--model", str(tiny_model)]
    assert main(args) == 0
    combined = read_lora(out)
    assert combined.format == "kohya" and combined.modules["transformer_blocks_0_attn2_to_q"].rank == 7
    assert all(m.scale == 1.0 for m in combined.modules.values())
    sep = load_tiny(tiny_model)
    load_loras(sep, [(loras["a"], 0.5), (loras["b"], 1.0)])
    one = load_tiny(tiny_model)
    load_loras(one, [(out, 1.0)])
    assert torch.allclose(forward(one), forward(sep), atol=1e-5)


def test_combine_svd_reduction_reports_error(tiny_model: Path, loras, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.safetensors"
    args = ["lora", "combine", f"{loras['a']}:0.5", f"{loras['b']}:1.0", "--out", str(out), "--rank", "4", "--to", "peft"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "SVD to rank 4" in text and "relative error" in text
    reduced = read_lora(out)
    assert reduced.format == "peft" and max(reduced.ranks) == 4
    # a rank large enough keeps the combination exact (error 0)
    exact = tmp_path / "e.safetensors"
    assert main(["lora", "combine", f"{loras['a']}:0.5", f"{loras['b']}:1.0", "--out", str(exact), "--rank", "7"]) == 0
    assert "max 0.000e+00" in capsys.readouterr().out


def test_bake_equals_unfused_application_in_both_layouts(tiny_models, loras, tmp_path: Path) -> None:
    for layout in ("diffusers", "original"):
        out = tmp_path / f"baked-{layout}"
        args = ["lora", "bake", "--model", str(tiny_models[layout]), "--lora", f"{loras['a']}:0.7",
                "--lora", f"{loras['b']}:0.2", "--out", str(out)]  # fmt: skip
        assert main(args) == 0
        baked = load_tiny(out)
        assert baked.info.layout == layout
        ref = load_tiny(tiny_models[layout])
        load_loras(ref, [(loras["a"], 0.7), (loras["b"], 0.2)])
        assert torch.allclose(forward(baked), forward(ref), atol=1e-5)
        for sub in ("vae", "text_encoder", "tokenizer", "scheduler"):
            assert (out / sub).is_dir()
        assert json.loads((out / "ufo_bake.json").read_text())["loras"][0][1] == 0.7
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert main(["lora", "bake", "--model", str(tiny_models["diffusers"]), "--lora", str(loras["a"]), "--out", str(out)]) == 2
