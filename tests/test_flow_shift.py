"""`--flow-shift` / `infer.flow_shift`: the static flow shift a step-distillation LoRA comes with.

On a tiny Wan (UniPC, `flow_shift` in its config): `generate --flow-shift 8` equals diffusers'
`WanPipeline` whose scheduler was rebuilt with `from_config(config, flow_shift=8)`, frame for
frame, and differs from the default; its sidecar records the shift and `--from-sidecar` makes it
again; `sweep --flow-shift` runs every row with it (sidecars, sweep.json, table, sweep.html). A
model whose scheduler shifts by the video size (the tiny EasyAnimate: `use_dynamic_shifting`)
refuses it with one line before its weights load.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contract.helpers import geometry
from contract.test_generation import FPS, GUIDANCE, NEGATIVE, PROMPT, SEED, STEPS, _reference_pipeline, _theirs
from ufo_video.cli import main

SHIFT = 8.0


@pytest.fixture(scope="module")
def wan(tmp_path_factory) -> dict:
    """A tiny Wan 2.1 text-to-video folder and a random LoRA for it (a stand-in for a distillation LoRA)."""
    from ufo_video.config import LoraSection
    from ufo_video.lora.formats import save_lora
    from ufo_video.lora.inject import add_lora
    from ufo_video.models.registry import load_model
    from ufo_video.models.wan.tiny import make_tiny_wan

    root = tmp_path_factory.mktemp("wan-shift")
    folder = make_tiny_wan(root / "t2v", variant="t2v", seed=0)
    model = load_model(folder, components=("transformer",), dtype=torch.float32)
    add_lora(model, LoraSection(rank=2, network_alpha=2.0, target_modules="attention"), "t")
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, param in model.transformer.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.5)
    lora = save_lora(root / "distill.safetensors", model, "t", {})
    return {"folder": folder, "lora": lora}


def _args(folder: Path, *extra: str) -> list[str]:
    side, frames = geometry(folder)
    return ["--model", str(folder), "--prompt", PROMPT, "--negative-prompt", NEGATIVE, "--video-length", str(frames),
            "--sample-size", str(side), str(side), "--steps", str(STEPS), "--seed", str(SEED), "--fps", str(FPS),
            "--dtype", "fp32", "--device", "cpu", "--guidance-scale", str(GUIDANCE), "--format", "png", *extra]  # fmt: skip


def _frames(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


def _generate(folder: Path, out: Path, *extra: str) -> np.ndarray:
    assert main(["generate", *_args(folder, *extra), "--out", str(out)]) == 0
    return _frames(out)


def test_generate_flow_shift_equals_the_pipeline_with_that_shift_and_reproduces(wan, tmp_path, capsys) -> None:
    folder = wan["folder"]
    shifted = _generate(folder, tmp_path / "shifted", "--flow-shift", "8")
    printed = capsys.readouterr().out
    assert "flow shift 8 (--flow-shift / infer.flow_shift): UniPCMultistepScheduler rebuilt; the model's own config: flow_shift=3" in printed
    default = _generate(folder, tmp_path / "default")
    assert (shifted != default).any()  # the shift reaches the schedule

    from diffusers import UniPCMultistepScheduler, WanPipeline

    side, frames = geometry(folder)
    pipe = _reference_pipeline(folder, "t2v")
    assert type(pipe) is WanPipeline and type(pipe.scheduler) is UniPCMultistepScheduler
    assert (_theirs(pipe, folder, "t2v", None, side, frames) == default).all()  # the reference as it comes
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=SHIFT)
    assert (_theirs(pipe, folder, "t2v", None, side, frames) == shifted).all()

    side_file = tmp_path / "shifted.json"
    assert json.loads(side_file.read_text())["settings"]["flow_shift"] == SHIFT
    assert json.loads((tmp_path / "default.json").read_text())["settings"]["flow_shift"] is None
    assert main(["generate", "--from-sidecar", str(side_file), "--format", "png", "--out", str(tmp_path / "again")]) == 0
    assert "reproduced exactly" in capsys.readouterr().out
    assert (_frames(tmp_path / "again") == shifted).all()
    # the sidecar's shift is what is made; a flag cannot change it
    assert main(["generate", "--from-sidecar", str(side_file), "--flow-shift", "3", "--out", str(tmp_path / "x")]) == 2
    assert "--flow-shift would change it" in capsys.readouterr().err


def test_sweep_flow_shift_runs_every_row_with_it(wan, tmp_path, capsys) -> None:
    folder, lora = wan["folder"], wan["lora"]
    out = tmp_path / "sw"
    ufo = tmp_path / "ufo.safetensors"  # the UFO swept over weights (a copy: its values do not matter here)
    ufo.write_bytes(lora.read_bytes())
    assert main(["sweep", *_args(folder, "--flow-shift", "8"), "--lora", str(ufo), "--weights", "0,0.5",
                 "--base-lora", f"{lora}:0.3", "--out-dir", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    rec = json.loads((out / "sweep.json").read_text())
    assert rec["settings"]["flow_shift"] == SHIFT and len(rec["videos"]) == 2
    # PNG frame folders alpha_0.0 / alpha_0.5 keep a sidecar each (not one shared alpha_0.json)
    assert sorted(v["sidecar"] for v in rec["videos"]) == ["alpha_0.0.json", "alpha_0.5.json"]
    for v in rec["videos"]:
        assert json.loads((out / v["sidecar"]).read_text())["settings"]["flow_shift"] == SHIFT, v["file"]
    line = "flow shift 8 in every video, the base included (--flow-shift)"
    assert line in printed and line in (out / "sweep.html").read_text()
    # the base row (the stack alone) is generate's video with the stack and the same shift
    alone = _generate(folder, tmp_path / "stack", "--lora", f"{lora}:0.3", "--flow-shift", "8")
    base = next(v for v in rec["videos"] if v["weight"] == 0)
    assert (_frames(out / base["file"]) == alone).all()


def test_a_dynamically_shifted_scheduler_refuses_flow_shift_in_one_line(tiny_model, tmp_path, capsys) -> None:
    from ufo_video.errors import UfoError
    from ufo_video.models import registry

    assert main(["generate", "--model", str(tiny_model), "--prompt", "x", "--flow-shift", "8", "--sample-size", "32", "32",
                 "--video-length", "5", "--steps", "2", "--out", str(tmp_path / "v.mp4")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: --flow-shift 8 (infer.flow_shift): ")
    assert "use_dynamic_shifting=true" in err and "leave --flow-shift unset" in err
    assert not (tmp_path / "v.mp4").exists()
    # the loaded scheduler is refused the same way (a folder whose config alone could not say)
    model = registry.load_model(tiny_model, components=("scheduler",))
    with pytest.raises(UfoError, match="use_dynamic_shifting=true"):
        model.scheduler_with_shift(model.scheduler, 8.0)


def test_the_shift_key_comes_from_the_scheduler_config(wan) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    from ufo_video.errors import UfoError
    from ufo_video.models.registry import model_shell

    shell = model_shell(wan["folder"])
    euler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    assert shell.scheduler_with_shift(euler, 5.0).config.shift == 5.0 and euler.config.shift == 3.0
    unipc = UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction")
    assert shell.scheduler_with_shift(unipc, 7.0).config.flow_shift == 7.0 and unipc.config.flow_shift == 3.0
    with pytest.raises(UfoError, match="has no static flow shift"):
        shell.scheduler_with_shift(UniPCMultistepScheduler(), 5.0)  # no flow sigmas: flow_shift does nothing


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_a_bad_flow_shift_names_the_field(value, tiny_model, tmp_path, capsys) -> None:
    assert main(["generate", "--model", str(tiny_model), "--prompt", "x", "--flow-shift", value,
                 "--out", str(tmp_path / "v.mp4")]) == 2  # fmt: skip
    assert "infer.flow_shift=" in capsys.readouterr().err


def test_a_loaded_generator_changes_its_shift_and_a_refusal_leaves_it_as_it_was(wan, tiny_model) -> None:
    from dataclasses import replace

    from ufo_video.errors import UfoError
    from ufo_video.infer.engine import VideoGenerator
    from ufo_video.infer.settings import GenerationSettings, VideoRequest

    side, frames = geometry(wan["folder"])
    plain = GenerationSettings(str(wan["folder"]), (side, side), frames, FPS, STEPS, GUIDANCE, "model_full_load", "fp32", "cpu")
    request = VideoRequest(PROMPT, NEGATIVE, SEED)
    gen = VideoGenerator(plain, log=lambda _: None)
    before = gen.generate(request)
    gen.update_settings(replace(plain, flow_shift=SHIFT))
    assert (gen.generate(request) == VideoGenerator(replace(plain, flow_shift=SHIFT), log=lambda _: None).generate(request)).all()
    gen.update_settings(plain)  # back to the model's own scheduler
    assert (gen.generate(request) == before).all()

    dynamic = VideoGenerator(replace(plain, model=str(tiny_model), sample_size=(32, 32), video_length=5), log=lambda _: None)
    with pytest.raises(UfoError, match="use_dynamic_shifting=true"):
        dynamic.update_settings(replace(dynamic.settings, flow_shift=SHIFT))
    assert dynamic.settings.flow_shift is None and dynamic.pipeline("t2v").scheduler is dynamic.model.scheduler
