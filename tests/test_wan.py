"""What is Wan-specific, through ufo-video's public interface: variants and real configs, the
single-file layout, LoRA formats diffusers' Wan loader reads, Wan's errors, size rules, TI2V, demo.

Tiny folders are written by diffusers' `WanPipeline.save_pretrained` (models/wan/tiny.py). What
every family must do (train per expert, cache == no cache, generate == diffusers' pipeline with a
trained LoRA, the start-image capture, LoRA round trips) is in tests/contract/.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from test_train_helpers import make_dataset, write_config
from ufo_video.cli import main
from ufo_video.models.wan.tiny import make_tiny_wan


@pytest.fixture(scope="module")
def wan_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wan")
    return {v: make_tiny_wan(root / v, variant=v, seed=0) for v in ("t2v", "i2v", "a14b", "a14b-i2v", "ti2v")}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds"))


def _applied_modules(pipe, component: str = "transformer") -> int:
    module = getattr(pipe, component)
    return sum(1 for _, m in module.named_modules() if hasattr(m, "lora_A") and len(m.lora_A) > 0)


# ---- model check ---------------------------------------------------------------------------------
def test_model_check_on_every_tiny_variant_and_the_real_configs(wan_models, capsys):
    for variant, path in wan_models.items():
        assert main(["model", "check", str(path), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["family"] == "wan" and report["variant"] == variant and report["layout"] == "diffusers"
        names = {c["name"] for c in report["components"]}
        assert ("transformer_2" in names) == variant.startswith("a14b")
        assert ("image_encoder" in names) == (variant == "i2v")
    assets = Path(__file__).resolve().parent.parent / "src" / "ufo_video" / "assets" / "wan-configs"
    expected = {"wan2.1-t2v-1.3b": 1_418_996_800, "wan2.1-t2v-14b": 14_288_491_584,
                "wan2.1-i2v-14b-480p": 16_394_878_784, "wan2.2-t2v-a14b": 14_288_491_584,
                "wan2.2-ti2v-5b": 4_999_787_712}  # fmt: skip
    for folder, params in expected.items():
        assert main(["model", "check", str(assets / folder), "--meta", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        counts = {c["name"]: c["parameters"] for c in report["components"]}
        assert counts["transformer"] == params, folder
        assert counts["text_encoder"] == 5_680_910_336, folder  # UMT5-XXL encoder, embeddings tied once
        assert report["layout"] == "configs-only"


def test_single_file_transformer_with_original_names_loads_like_the_diffusers_folder(tmp_path):
    from ufo_video.models.registry import load_model

    a = load_model(make_tiny_wan(tmp_path / "d", variant="a14b", seed=3), components=("transformer", "transformer_2"))
    b = load_model(make_tiny_wan(tmp_path / "s", variant="a14b", seed=3, layout="single-file"),
                   components=("transformer", "transformer_2"))  # fmt: skip
    assert b.info.layout == "single-file"
    for name in ("transformer", "transformer_2"):
        sa, sb = a.expert_module(name).state_dict(), b.expert_module(name).state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- conditioning: ours == what the diffusers pipeline passes to its transformer ------------------


# ---- train, then generate: ufo-video == diffusers + load_lora_weights ------------------------------


# ---- LoRA formats ----------------------------------------------------------------------------------
def test_lora_formats_round_trip_bit_exact_and_load_in_diffusers(wan_models, tmp_path):
    from diffusers import WanPipeline

    from ufo_video.lora.formats import read_lora
    from ufo_video.lora.inject import add_lora
    from ufo_video.lora.formats import save_lora
    from ufo_video.config import LoraSection
    from ufo_video.models.registry import load_model

    model = load_model(wan_models["t2v"], components=("transformer",))
    torch.manual_seed(0)
    add_lora(model, LoraSection(rank=2, network_alpha=1.0, target_modules="all-linear"), adapter_name="ufo")
    for p in model.transformer.parameters():
        if p.requires_grad:
            p.data.normal_()
    src = save_lora(tmp_path / "comfy.safetensors", model, "ufo", {})
    previous = src
    for fmt in ("musubi", "peft", "kohya", "comfy"):
        out = tmp_path / f"to-{fmt}.safetensors"
        assert main(["lora", "convert", str(previous), str(out), "--to", fmt]) == 0
        assert read_lora(out).format == ("musubi" if fmt == "kohya" else fmt)  # Wan's kohya naming is musubi's
        previous = out
    a, b = read_lora(src), read_lora(previous)
    assert a.modules.keys() == b.modules.keys()
    assert all(torch.equal(a.modules[k].down, b.modules[k].down) and torch.equal(a.modules[k].up, b.modules[k].up)
               and a.modules[k].alpha == b.modules[k].alpha for k in a.modules)  # fmt: skip
    for fmt in ("musubi", "kohya"):  # the keys musubi-tuner and ComfyUI read natively, not EasyAnimate's `lora_unet__`
        with safe_open(str(tmp_path / f"to-{fmt}.safetensors"), framework="pt") as h:
            assert any(k.startswith("lora_unet_blocks_0_self_attn_q.") for k in h.keys())
            assert not any(k.startswith("lora_unet__") for k in h.keys())
    # every format diffusers reads gives the same effect, with every module applied
    outputs = []
    for fmt in ("comfy", "musubi", "peft"):
        pipe = WanPipeline.from_pretrained(str(wan_models["t2v"]), torch_dtype=torch.float32)
        pipe.load_lora_weights(str(src if fmt == "comfy" else tmp_path / f"to-{fmt}.safetensors"), adapter_name="x")
        assert _applied_modules(pipe) == 20, fmt
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 16, 3, 4, 4, generator=g)
        text = torch.randn(1, 512, 32, generator=g)
        with torch.no_grad():
            outputs.append(pipe.transformer(x, torch.tensor([500.0]), text, return_dict=False)[0])
    assert torch.equal(outputs[0], outputs[1]) and torch.allclose(outputs[0], outputs[2], atol=1e-6)


# ---- bad input ---------------------------------------------------------------------------------------
def test_bad_wan_inputs_give_clear_errors(wan_models, tmp_path, capsys, dataset):
    import shutil

    def err(args: list[str]) -> str:
        assert main(args) == 2
        return capsys.readouterr().err

    broken = tmp_path / "no-expert"
    shutil.copytree(wan_models["a14b"], broken)
    shutil.rmtree(broken / "transformer_2")
    assert "missing subfolder 'transformer_2/' (the low-noise expert" in err(["model", "check", str(broken)])
    no_clip = tmp_path / "no-clip"
    shutil.copytree(wan_models["i2v"], no_clip)
    shutil.rmtree(no_clip / "image_encoder")
    assert "missing subfolder 'image_encoder/'" in err(["model", "check", str(no_clip)])
    odd = tmp_path / "odd"
    (odd / "transformer").mkdir(parents=True)
    (odd / "transformer" / "config.json").write_text('{"_class_name": "SomethingElse"}')
    message = err(["model", "check", str(odd)])
    assert "not a model folder of a known family" in message and "WanTransformer3DModel" in message
    # a frame count / size the family cannot take (TI2V: 16x VAE x patch 2 = multiples of 32)
    cfg = write_config(tmp_path / "ti2v.toml", wan_models["ti2v"], dataset, tmp_path / "ti2v-out")
    message = err(["train", str(cfg), "video_sample_size=48", "image_sample_size=48", "token_sample_size=48"])
    assert "multiple of 32" in message and "data.video_sample_size" in message


def test_text_to_video_on_an_i2v_only_model_suggests_image(wan_models, tmp_path, capsys):
    """An I2V-only model without a start image: refused before loading, and the line says how to fix it."""
    assert main(["generate", "--model", str(wan_models["i2v"]), "--prompt", "x", "--out", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err
    assert "cannot make text-to-video; it supports i2v" in err and "--image" in err and "Traceback" not in err


def test_size_rules_come_from_the_model_not_the_config(wan_models, tiny_model, dataset, tmp_path, capsys):
    """The config no longer carries a family's rules: a 4k+1 / multiple-of-16 mistake is reported
    against the model it would run on, naming the key and the model's numbers."""
    cfg = write_config(tmp_path / "c.toml", tiny_model, dataset, tmp_path / "out")
    assert main(["train", str(cfg), "video_sample_n_frames=6"]) == 2
    message = capsys.readouterr().err
    assert "data.video_sample_n_frames=6 must be 4k+1" in message and "nearest: 5 or 9" in message
    run = ["generate", "--model", str(wan_models["ti2v"]), "--prompt", "x", "--steps", "1", "--dtype", "fp32",
           "--out", str(tmp_path / "v.mp4")]  # fmt: skip
    assert main([*run, "infer.sample_size=[48, 64]", "infer.video_length=9"]) == 2
    assert "infer.sample_size=[48, 64]: both sides must be a multiple of 32 (Wan VAE 16x times patch 2)" in capsys.readouterr().err
    assert main([*run, "--sample-size", "48", "64", "--video-length", "8"]) == 0
    out = capsys.readouterr().out
    assert "sample size 48x64 is not a multiple of 32 (Wan VAE 16x times patch 2); using 64x64" in out
    assert "video_length 8 is not 4k+1 (the Wan VAE compresses time 4x causally); using 9" in out


def test_i2v_validation_clips(wan_models, dataset, tmp_path, capsys):
    """An image-only model validates from infer.validation_image_start (refused before training
    without it). (Cached training equal to uncached: tests/contract.)"""
    model = wan_models["i2v"]
    out = tmp_path / "v"
    cfg = write_config(tmp_path / "v.toml", model, dataset, out, max_train_steps=2, checkpointing_steps=2,
                       save_state=False, validation_steps=2, validation_prompts=["a cat"])  # fmt: skip
    assert main(["train", str(cfg), "infer.num_inference_steps=1"]) == 2
    assert "infer.validation_image_start" in capsys.readouterr().err
    image = next((dataset / "train").glob("img0.png"))
    assert main(["train", str(cfg), "infer.num_inference_steps=1", f"infer.validation_image_start={image}"]) == 0
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-000002-prompt0-w0.15.mp4", "step-000002-prompt0-w1.mp4"]


def test_every_command_on_ti2v(wan_models, dataset, tmp_path, capsys):
    """TI2V-5B: train (text-to-video), generate t2v and i2v (frame-0 replacement), the step cache,
    sweep, eval and lora inspect. (Each expert's training, generation == diffusers: tests/contract.)"""
    from PIL import Image

    model = wan_models["ti2v"]
    out = tmp_path / "ti2v"
    cfg = write_config(tmp_path / "ti2v.toml", model, dataset, out, max_train_steps=2, checkpointing_steps=2,
                       save_state=False)  # fmt: skip
    assert main(["train", str(cfg), "image_sample_size=32", "video_sample_size=32", "token_sample_size=32"]) == 0
    lora = out / "checkpoint-2.safetensors"
    base = ["generate", "--model", str(model), "--prompt", "a cat", "--video-length", "9", "--sample-size", "32", "32",
            "--steps", "2", "--dtype", "fp32"]  # fmt: skip
    assert main([*base, "--lora", f"{lora}:0.2", "--out", str(tmp_path / "t2v.mp4"), "--cache", "first-block"]) == 0
    assert "step cache (first-block" in capsys.readouterr().out
    image = tmp_path / "start.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(image)
    assert main([*base, "--lora", f"{lora}:0.2", "--image", str(image), "--out", str(tmp_path / "i2v.mp4")]) == 0
    sweep = tmp_path / "sweep"
    assert main(["sweep", "--model", str(model), "--lora", str(lora), "--weights", "0,0.5", "--prompt", "a cat",
                 "--video-length", "9", "--sample-size", "32", "32", "--steps", "2", "--dtype", "fp32",
                 "--out-dir", str(sweep)]) == 0  # fmt: skip
    videos = sorted(str(p) for p in sweep.glob("*.mp4") if p.name != "grid.mp4")
    assert len(videos) >= 2
    assert main(["eval", *videos, "--json"]) == 0
    capsys.readouterr()
    assert main(["lora", "inspect", str(lora), "--model", str(model)]) == 0
    text = capsys.readouterr().out
    assert "format   comfy" in text and "modules matched" in text


def test_demo_flow_runs_on_a_tiny_wan(wan_models, tmp_path):
    """`ufo-video demo --model DIR` runs the whole flow (data, check, train, sweep over weights,
    metrics, report) on a Wan model; a two-expert model is refused with what to do instead."""
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--model", str(wan_models["ti2v"]), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["base_model"]["family"] == "wan" and report["base_model"]["modes"] == ["t2v", "i2v"]
    assert {v["mode"] for v in report["videos"]} == {"t2v", "i2v"}
    assert (out / "report.html").is_file()
    assert main(["demo", "--quick", "--model", str(wan_models["t2v"]), "--out", str(tmp_path / "d1")]) == 0
    assert set(json.loads((tmp_path / "d1" / "report.json").read_text())["trend"]) == {"all", "t2v"}
    assert main(["demo", "--quick", "--model", str(wan_models["a14b"]), "--out", str(tmp_path / "d2")]) == 2


def test_wan_posterior_mean_is_encode_video(wan_models):
    from ufo_video.models.registry import load_model

    model = load_model(wan_models["t2v"], components=("vae",))
    pixels = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        mean, std = model.encode_video_posterior(pixels)
        assert torch.equal(mean, model.encode_video(pixels)) and (std > 0).all()
