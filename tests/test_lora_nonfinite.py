"""A LoRA file with NaN or infinite values (or a non-finite alpha) is named by `lora inspect`
(exit 1) and refused, naming the file, by every command that applies or merges it, before any
model loads (`generate`, `sweep`, the web UI's generator, `lora combine`, `lora bake`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from test_lora_support import random_lora_file
from ufo_video.cli import main
from ufo_video.errors import LoraError
from ufo_video.models import registry

TINY = ["--sample-size", "32", "32", "--video-length", "5", "--steps", "2", "--dtype", "fp32"]


@pytest.fixture(scope="module")
def files(tiny_models, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nonfinite")
    good = random_lora_file(tiny_models["diffusers"], root / "good.safetensors", rank=2)
    tensors = load_file(str(good))
    down = sorted(k for k in tensors if k.endswith(".lora_down.weight"))[0]
    alpha = sorted(k for k in tensors if k.endswith(".alpha"))[1]
    nan = dict(tensors)
    nan[down] = nan[down].clone()
    nan[down][0, 0] = float("nan")
    save_file(nan, str(root / "nan.safetensors"))
    inf = dict(tensors)
    inf[alpha] = torch.tensor(float("inf"), dtype=inf[alpha].dtype)
    save_file(inf, str(root / "inf-alpha.safetensors"))
    return {"good": good, "nan": root / "nan.safetensors", "inf": root / "inf-alpha.safetensors",
            "nan_module": down.removeprefix("lora_unet__").removesuffix(".lora_down.weight"),
            "inf_module": alpha.removeprefix("lora_unet__").removesuffix(".alpha")}  # fmt: skip


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("the model was loaded before the LoRA was checked")

    monkeypatch.setattr(registry, "load_model", refuse)


def _refused(capsys, argv: list[str], path: Path) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: NaN or infinite values in 1 LoRA tensors"), err
    assert "weight_dtype" not in err and "Traceback" not in err
    return err


def test_inspect_names_nonfinite_tensors_and_alpha(files, capsys):
    assert main(["lora", "inspect", str(files["good"])]) == 0
    assert "NaN" not in capsys.readouterr().out
    assert main(["lora", "inspect", str(files["nan"])]) == 1
    out = capsys.readouterr().out
    assert "NaN or infinite values (1)" in out and f"{files['nan_module']} down (1 NaN, 0 inf of " in out
    assert main(["lora", "inspect", str(files["inf"]), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["nonfinite"] == [f"{files['inf_module']} alpha = inf"]


def test_generate_and_sweep_refuse_before_the_model_loads(tiny_model, files, tmp_path, capsys, no_model_loading):
    base = ["generate", "--model", str(tiny_model), *TINY, "--prompt", "x"]
    err = _refused(capsys, [*base, "--lora", f"{files['nan']}:0.5", "--out", str(tmp_path / "a.mp4")], files["nan"])
    assert f"{files['nan_module']} down (1 NaN" in err
    err = _refused(capsys, [*base, "--lora", str(files["inf"]), "--out", str(tmp_path / "b.mp4")], files["inf"])
    assert f"{files['inf_module']} alpha = inf" in err
    _refused(capsys, ["sweep", "--model", str(tiny_model), *TINY, "--prompt", "x", "--lora", str(files["good"]),
                      "--lora", str(files["nan"]), "--out-dir", str(tmp_path / "s")], files["nan"])  # fmt: skip
    assert not list(tmp_path.glob("*.mp4"))


def test_web_ui_generator_refuses_before_the_model_loads(tiny_model, files, no_model_loading):
    from ufo_video.infer.settings import GenerationSettings, LoraSpec
    from ufo_video.ui.session import ModelSession

    settings = GenerationSettings(model=str(tiny_model), sample_size=(32, 32), video_length=5, fps=8,
                                  num_inference_steps=2, guidance_scale=6.0, memory_mode="model_full_load",
                                  weight_dtype="fp32", device="cpu", loras=(LoraSpec(str(files["nan"]), 0.5),))  # fmt: skip
    with pytest.raises(LoraError, match=f"{files['nan']}: NaN or infinite values"):
        ModelSession(log=lambda _: None).generator(settings)


def test_combine_and_bake_refuse(tiny_model, files, tmp_path, capsys, no_model_loading):
    _refused(capsys, ["lora", "combine", str(files["good"]), f"{files['nan']}:0.5", "--out", str(tmp_path / "c.safetensors")],
             files["nan"])  # fmt: skip
    _refused(capsys, ["lora", "bake", "--model", str(tiny_model), "--lora", str(files["inf"]), "--out", str(tmp_path / "b")],
             files["inf"])  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == []
