"""LTX-2 as a registered family, through ufo-video's public interface, compared with diffusers' own
LTX-2 pipelines on tiny folders (models/ltx2/tiny.py, written by `LTX2Pipeline.save_pretrained`).

A LoRA in the LTX-2 file format (the one ComfyUI and diffusers both load) must give the same video
in `ufo-video generate` and in `LTX2Pipeline` / `LTX2ImageToVideoPipeline` after
`load_lora_weights` + `set_adapters`, frame for frame. Training: tests/test_ltx2_train.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from test_train_helpers import own_memory
from ufo_video.cli import main

ASSETS = Path(__file__).resolve().parent.parent / "src" / "ufo_video" / "assets" / "ltx2-configs"
STEPS, FRAMES, SIZE, FPS, SEED, WEIGHT = 2, 9, 64, 8, 7, 0.5


@pytest.fixture(scope="module")
def ltx2_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ltx2")
    for variant in ("t2v", "i2v"):
        assert main(["model", "make-tiny", str(root / variant), "--family", "ltx2", "--variant", variant]) == 0
    return {v: root / v for v in ("t2v", "i2v")}


@pytest.fixture(scope="module")
def lora_file(ltx2_models, tmp_path_factory) -> Path:
    """A random LoRA (lora_B non-zero, alpha != rank so the writer must fold the scale) on every
    linear of the `all-linear` preset, saved in the family's default format by `save_lora`."""
    from ufo_video.config import LoraSection
    from ufo_video.lora.formats import save_lora
    from ufo_video.lora.inject import add_lora
    from ufo_video.models.registry import load_model

    model = load_model(ltx2_models["t2v"], components=("transformer",))
    add_lora(model, LoraSection(rank=2, network_alpha=4.0, target_modules="all-linear"), adapter_name="ufo")
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in model.transformer.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return save_lora(tmp_path_factory.mktemp("lora") / "ufo-ltx2.safetensors", model, "ufo", {})


def _generate(model: Path, out: Path, *args: str) -> np.ndarray:
    assert main(["generate", "--model", str(model), "--prompt", "a cat on a car", "--negative-prompt", "dog",
                 "--video-length", str(FRAMES), "--sample-size", str(SIZE), str(SIZE), "--steps", str(STEPS),
                 "--seed", str(SEED), "--fps", str(FPS), "--dtype", "fp32", "--device", "cpu", "--guidance-scale", "3",
                 "--format", "png", "--out", str(out), *args]) == 0  # fmt: skip
    return np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))])


def _reference_pipeline(cls, model: Path):
    """diffusers' pipeline in fp32 with every tensor in memory of its own (`own_memory`: why)."""
    pipe = cls.from_pretrained(str(model), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return own_memory(pipe)


def _diffusers_frames(pipe, **kwargs) -> np.ndarray:
    """The same call as `ufo-video generate` makes: the pipeline's defaults, plus the two the adapter
    sets (the video's frame rate, the STG block valid for a 2-layer transformer)."""
    result = pipe(prompt="a cat on a car", negative_prompt="dog", num_frames=FRAMES, height=SIZE, width=SIZE,
                  num_inference_steps=STEPS, guidance_scale=3.0, generator=torch.Generator("cpu").manual_seed(SEED),
                  output_type="pt", frame_rate=float(FPS), spatio_temporal_guidance_blocks=[1], **kwargs)  # fmt: skip
    frames = result.frames[0].permute(0, 2, 3, 1).float().clamp(0, 1)
    return (frames * 255).round().to(torch.uint8).numpy()


def _applied_modules(pipe) -> int:
    return sum(1 for _, m in pipe.transformer.named_modules() if hasattr(m, "lora_A") and len(m.lora_A) > 0)


def _file_keys(path: Path) -> list[str]:
    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())


# ---- folders ---------------------------------------------------------------------------------------
def test_make_tiny_and_model_check(ltx2_models, capsys):
    for variant, path in ltx2_models.items():
        assert main(["model", "check", str(path), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert (report["family"], report["variant"], report["layout"]) == ("ltx2", variant, "diffusers")
        names = {c["name"] for c in report["components"]}
        assert names == {"transformer", "vae", "audio_vae", "connectors", "vocoder", "text_encoder"}
        assert report["licence"].startswith("LTX-2 Community License")
    assert main(["model", "check", str(ltx2_models["t2v"])]) == 0
    assert "licence: LTX-2 Community License (not Apache-2.0)" in capsys.readouterr().out


def test_model_check_meta_on_the_shipped_configs(capsys):
    expected = {  # parameters per component, from diffusers' classes on the meta device
        "ltx-2-19b-dev": dict(transformer=18_876_174_592, connectors=1_431_475_200, vae=1_222_479_601, vocoder=55_592_802),
        "ltx-2.3-22b-distilled": dict(transformer=18_988_838_144, connectors=3_172_227_584, vae=726_105_969,
                                      vocoder=128_537_448),
    }  # fmt: skip
    for folder, params in expected.items():
        assert main(["model", "check", str(ASSETS / folder), "--meta", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        counts = {c["name"]: c["parameters"] for c in report["components"]}
        assert {k: counts[k] for k in params} == params and counts["audio_vae"] == 53_248_146
        assert report["layout"] == "configs-only" and report["family"] == "ltx2"


def test_inspect_reads_version_and_distilled_and_defaults_follow(ltx2_models):
    from ufo_video.errors import UfoError
    from ufo_video.models.registry import model_shell

    tiny = model_shell(ltx2_models["i2v"])
    assert tiny.info.extra["version"] == "2.0" and not tiny.info.extra["distilled"] and tiny.tasks == ("t2v", "i2v")
    assert (tiny.rules.size_multiple, tiny.rules.temporal_factor) == (32, 8) and tiny.rules.frames_ok(9)
    assert tiny.stg_blocks() == [1]  # the pipelines' [28] would index past a 2-layer transformer
    assert tiny.pipeline_defaults("t2v", steps=30, guidance_scale=3.0, fps=24) == {
        "frame_rate": 24.0, "spatio_temporal_guidance_blocks": [1]}  # fmt: skip
    base = model_shell(ASSETS / "ltx-2-19b-dev")
    assert base.stg_blocks() == [28] and not base.info.extra["distilled"]
    distilled = model_shell(ASSETS / "ltx-2.3-22b-distilled")
    assert distilled.info.extra["version"] == "2.3" and distilled.info.extra["distilled"]
    inputs = distilled.pipeline_defaults("t2v", steps=8, guidance_scale=1.0, fps=24)
    assert inputs["sigmas"][0] == 1.0 and len(inputs["sigmas"]) == 8 and inputs["stg_scale"] == 0.0
    with pytest.raises(UfoError, match="use --steps 8"):
        distilled.pipeline_defaults("t2v", steps=30, guidance_scale=1.0, fps=24)
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler.from_pretrained(str(ASSETS / "ltx-2.3-22b-distilled" / "scheduler"))
    with pytest.raises(UfoError, match="distilled LTX-2 checkpoint .* fixed sigmas"):  # --flow-shift would move them
        distilled.scheduler_with_shift(sched, 5.0)
    base_sched = FlowMatchEulerDiscreteScheduler.from_pretrained(str(ASSETS / "ltx-2-19b-dev" / "scheduler"))
    with pytest.raises(UfoError, match="use_dynamic_shifting"):  # the generic refusal for a size-shifted schedule
        base.scheduler_with_shift(base_sched, 5.0)


# ---- generation with a LoRA equals diffusers' pipelines --------------------------------------------
def test_lora_file_is_the_format_diffusers_and_comfyui_load(lora_file, ltx2_models, capsys):
    keys = _file_keys(lora_file)
    assert keys and all(k.startswith("diffusion_model.transformer_blocks.") for k in keys)
    assert not any(k.endswith(".alpha") for k in keys)  # diffusers' LTX-2 loader refuses alpha keys
    assert main(["lora", "inspect", str(lora_file), "--model", str(ltx2_models["t2v"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "ltx2-comfy" and report["modules"] == len(keys) // 2 == 2 * 28  # 2 blocks x 28 linears
    # PEFT and back: the folded scale is 1, so the round trip is bit-exact
    peft, back = lora_file.parent / "peft.safetensors", lora_file.parent / "back.safetensors"
    assert main(["lora", "convert", str(lora_file), str(peft), "--to", "peft", "--model", str(ltx2_models["t2v"])]) == 0
    assert main(["lora", "convert", str(peft), str(back), "--to", "ltx2-comfy"]) == 0
    with safe_open(str(lora_file), framework="pt") as a, safe_open(str(back), framework="pt") as b:
        assert sorted(a.keys()) == sorted(b.keys()) and all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())


def test_the_format_is_read_from_the_metadata_and_a_folded_scale_is_reported(lora_file, ltx2_models, tmp_path, capsys):
    """`ltx2-comfy` files carry ComfyUI's keys: the writer's `ufo_format` record tells them apart
    (without it the same keys read as `comfy`, alpha = rank). Converting a LoRA whose alpha/rank is
    not 1 into `ltx2-comfy` changes lora_B, and `lora convert` says so instead of "tensors unchanged"."""
    from dataclasses import replace

    from safetensors.torch import load_file, save_file

    from ufo_video.lora.formats import LoraModule, read_lora, write_lora

    ours = read_lora(lora_file)
    assert ours.format == "ltx2-comfy" and ours.metadata["ufo_format"] == "ltx2-comfy"
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(str(lora_file)), str(bare))  # the same tensors, no metadata
    plain = read_lora(bare)
    assert plain.format == "comfy" and all(m.alpha == m.rank for m in plain.modules.values())

    model = ["--model", str(ltx2_models["t2v"])]
    peft = tmp_path / "peft.safetensors"
    assert main(["lora", "convert", str(lora_file), str(peft), "--to", "peft", *model]) == 0
    assert "tensors unchanged" in capsys.readouterr().out
    half = read_lora(peft)  # scale 2 (alpha = 2 x rank) on every module, lora_B halved
    doubled = {k: LoraModule(m.down, m.up / 2, 2.0 * m.rank) for k, m in half.modules.items()}
    scaled = tmp_path / "scaled.safetensors"
    write_lora(scaled, replace(half, modules=doubled, metadata={}))
    folded = tmp_path / "folded.safetensors"
    assert main(["lora", "convert", str(scaled), str(folded), "--to", "ltx2-comfy", *model]) == 0
    out = capsys.readouterr().out
    assert f"alpha/rank folded into lora_B of {len(doubled)} modules" in out and "unchanged" not in out
    back = read_lora(folded)
    assert back.format == "ltx2-comfy"
    assert all(torch.equal(back.modules[k].up, m.up) for k, m in ours.modules.items())  # x0.5 then x2: exact


def test_generate_t2v_with_a_lora_equals_ltx2_pipeline(ltx2_models, lora_file, tmp_path, capsys):
    from diffusers import LTX2Pipeline

    ours = _generate(ltx2_models["t2v"], tmp_path / "ours", "--lora", f"{lora_file}:{WEIGHT}")
    assert "licence: LTX-2 Community License" in capsys.readouterr().out  # said where the model is used (CLI, UI log)
    pipe = _reference_pipeline(LTX2Pipeline, ltx2_models["t2v"])
    pipe.load_lora_weights(str(lora_file), adapter_name="ufo")
    assert _applied_modules(pipe) == len(_file_keys(lora_file)) // 2  # every module of the file applied
    pipe.set_adapters(["ufo"], [WEIGHT])
    theirs = _diffusers_frames(pipe)
    assert ours.shape == theirs.shape == (FRAMES, SIZE, SIZE, 3)
    assert np.array_equal(ours, theirs)
    base = _generate(ltx2_models["t2v"], tmp_path / "base")
    assert not np.array_equal(base, ours)  # the LoRA changed the video


def test_generate_i2v_with_a_lora_equals_ltx2_image_to_video_pipeline(ltx2_models, lora_file, tmp_path):
    from diffusers import LTX2ImageToVideoPipeline

    rng = np.random.default_rng(0)
    image_path = tmp_path / "start.png"
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(image_path)
    ours = _generate(ltx2_models["i2v"], tmp_path / "ours", "--lora", f"{lora_file}:{WEIGHT}", "--image", str(image_path))
    pipe = _reference_pipeline(LTX2ImageToVideoPipeline, ltx2_models["i2v"])
    pipe.load_lora_weights(str(lora_file), adapter_name="ufo")
    pipe.set_adapters(["ufo"], [WEIGHT])
    theirs = _diffusers_frames(pipe, image=Image.open(image_path).convert("RGB"))
    assert np.array_equal(ours, theirs)
    t2v = _generate(ltx2_models["i2v"], tmp_path / "t2v", "--lora", f"{lora_file}:{WEIGHT}")
    assert not np.array_equal(t2v, ours)  # the start image conditioned the video


def test_generate_uses_the_frame_rate_ltx2_conditions_on_unless_told(ltx2_models, tmp_path):
    """Without --fps, LTX-2 generates at 24 fps (the pipelines' frame_rate, which the model
    conditions on and training uses); --fps wins; other families keep the generic default."""
    import json

    def fps_of(*extra: str) -> int:
        out = tmp_path / f"v{len(list(tmp_path.glob('*.mp4')))}.mp4"
        assert main(["generate", "--model", str(ltx2_models["t2v"]), "--prompt", "x", "--sample-size", "64", "64",
                     "--video-length", "9", "--steps", "2", "--guidance-scale", "1", "--dtype", "fp32",
                     "--out", str(out), *extra]) == 0  # fmt: skip
        return json.loads(out.with_suffix(".json").read_text())["settings"]["fps"]

    assert fps_of() == 24 and fps_of("--fps", "8") == 8


def test_nan_frames_name_what_fits_the_settings_not_the_dtype_of_an_fp32_run(ltx2_models, tmp_path, capsys):
    """One step on a shifted schedule divides by zero inside the scheduler: on an fp32 run the
    error suggests more steps and the model check, never fp32."""
    assert main(["generate", "--model", str(ltx2_models["t2v"]), "--prompt", "x", "--sample-size", "64", "64",
                 "--video-length", "9", "--steps", "1", "--guidance-scale", "1", "--dtype", "fp32",
                 "--out", str(tmp_path / "v.mp4")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "NaN/inf frames" in err and "more steps" in err and "fp32 instead" not in err and "fp16" not in err


def test_first_block_cache_is_refused_while_diffusers_skips_a_block_with_its_text_input(ltx2_models, tmp_path,
                                                                                       capsys):
    """diffusers' First Block Cache hands a skipped block's `encoder_hidden_states` input back as its
    second output; an LTX-2 block's second output is audio, its `encoder_hidden_states` the text. So
    `--cache first-block` is refused with one line. When diffusers' skipped-block hook no longer reads
    `encoder_hidden_states` (the probe below fails), the refusal can become a registration."""
    import inspect

    from diffusers.hooks import first_block_cache

    assert '"encoder_hidden_states", args, kwargs' in inspect.getsource(first_block_cache.FBCBlockHook.new_forward)
    assert main(["generate", "--model", str(ltx2_models["t2v"]), "--prompt", "a cat", "--video-length", str(FRAMES),
                 "--sample-size", str(SIZE), str(SIZE), "--steps", "2", "--device", "cpu", "--dtype", "fp32",
                 "--cache", "first-block", "--out", str(tmp_path / "v.mp4")]) == 2
    err = capsys.readouterr().err
    assert "does not work on LTX-2" in err and "Traceback" not in err
    assert not (tmp_path / "v.mp4").exists()
