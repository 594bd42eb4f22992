"""Wan 2.1 / 2.2 through ufo-video's public interface, compared with diffusers' own Wan pipelines.

Tiny folders are written by diffusers' `WanPipeline.save_pretrained` (models/wan/tiny.py). A UFO
LoRA trained by `ufo-video train` must give the same video in `ufo-video generate` and in
diffusers' `WanPipeline` after `load_lora_weights` (users move between the two freely).
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

STEPS = 3


@pytest.fixture(scope="module")
def wan_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wan")
    return {v: make_tiny_wan(root / v, variant=v, seed=0) for v in ("t2v", "i2v", "a14b", "a14b-i2v", "ti2v")}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds"))


def _train(tmp_path: Path, model: Path, data: Path, name: str, *overrides: str) -> Path:
    out = tmp_path / name
    cfg = write_config(tmp_path / f"{name}.toml", model, data, out, max_train_steps=2, checkpointing_steps=2,
                       save_state=False, learning_rate=5e-2)  # fmt: skip
    assert main(["train", str(cfg), "lora.target_modules=all-linear", *overrides]) == 0
    return out / "checkpoint-2.safetensors"


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata())


def _generate(model: Path, out: Path, *args: str) -> np.ndarray:
    from ufo_video.data.media import decode_video_frames  # noqa: F401  (PyAV present)

    assert main(["generate", "--model", str(model), "--prompt", "a cat on a car", "--negative-prompt", "dog",
                 "--video-length", "9", "--sample-size", "32", "32", "--steps", str(STEPS), "--seed", "7",
                 "--dtype", "fp32", "--device", "cpu", "--guidance-scale", "5", "--format", "png",
                 "--out", str(out), *args]) == 0  # fmt: skip
    from PIL import Image

    return np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))])


def _diffusers_frames(pipe, **kwargs) -> np.ndarray:
    result = pipe(prompt="a cat on a car", negative_prompt="dog", num_frames=9, height=32, width=32,
                  num_inference_steps=STEPS, guidance_scale=5.0, generator=torch.Generator("cpu").manual_seed(7),
                  output_type="pt", **kwargs)  # fmt: skip
    frames = result.frames[0].permute(0, 2, 3, 1).float().clamp(0, 1)
    return (frames * 255).round().to(torch.uint8).numpy()


def _reference_pipeline(cls, model: Path):
    """diffusers' pipeline `cls` for `model` in fp32, every tensor moved into memory of its own.

    Why: `from_pretrained` leaves each weight a view into the memory-mapped safetensors file, at
    its offset in the file; in these tiny files the data start 8 bytes past a 16-byte boundary, so
    every transformer and VAE weight is only 8-byte aligned. ufo-video's loader reads each tensor
    into a buffer of its own (16-byte aligned or better). The values and the operations are the
    same, but MKL's default sgemm (not in its reproducible CNR mode; e.g. on AMD EPYC) picks its
    summation order for a one-row product (the timestep MLP at batch 1) by the weight's 16-byte
    alignment: the same timestep embedding then differs by ~1e-7, which moves a pixel by 1/255
    now and then. Copying each tensor changes no value and no operation, only where its bytes
    lie, so the comparison below stays bit-exact on every CPU."""
    pipe = cls.from_pretrained(str(model), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                for tensor in [*component.parameters(), *component.buffers()]:
                    tensor.data = tensor.data.clone(memory_format=torch.contiguous_format)
    return pipe


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
@pytest.mark.parametrize("variant", ["i2v", "a14b-i2v"])
def test_i2v_training_conditioning_equals_the_pipeline_input(wan_models, variant):
    """Capture the transformer's inputs inside `WanImageToVideoPipeline` (forward pre-hook) and
    compare them with `training_conditioning` for the same start image (noise aside)."""
    from ufo_video.models.registry import load_model

    model = load_model(wan_models[variant])
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    from PIL import Image

    captured: list[dict] = []

    def grab(module, args, kwargs):
        captured.append({k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()})

    handle = model.transformer.register_forward_pre_hook(grab, with_kwargs=True)
    pipe = model.pipeline("i2v")
    pipe.set_progress_bar_config(disable=True)
    pipe(image=Image.fromarray(image), prompt="a cat", num_frames=9, height=32, width=32, num_inference_steps=1,
         guidance_scale=1.0, generator=torch.Generator("cpu").manual_seed(0), output_type="latent")  # fmt: skip
    handle.remove()
    seen = captured[0]
    pixels = torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1)[None, :, None].repeat(1, 1, 9, 1, 1)
    latents = model.encode_video(pixels)
    with torch.no_grad():
        cond, kinds = model.training_conditioning(pixels, latents, [torch.Generator()], "inpaint")
    assert kinds == ["first"]
    z = latents.shape[1]
    assert torch.allclose(seen["hidden_states"][:, z:], cond["latent_condition"], atol=1e-5)
    if variant == "i2v":
        assert torch.allclose(seen["encoder_hidden_states_image"], cond["image_embeds"], atol=1e-5)
    else:
        assert seen.get("encoder_hidden_states_image") is None and "image_embeds" not in cond
    with torch.no_grad():  # as the trainer encodes
        text = model.encode_text(["a cat"], "cpu")
    assert torch.equal(seen["encoder_hidden_states"], text["embeds"])


def test_easyanimate_i2v_training_conditioning_equals_the_pipeline_input(tiny_model):
    """The same capture for EasyAnimate's inpaint pipeline: its `inpaint_latents` for a start
    image equal the adapter's `first` mask conditioning, noise aside: the pipeline's start-image
    noise (`add_noise_in_inpaint_model`, fixed strength 0.0563) is set to 0 here; training draws its
    own per sample (`train.start_image_noise`, tested in test_train_units.py)."""
    from PIL import Image

    from ufo_video.models.easyanimate import masks
    from ufo_video.models.registry import load_model

    model = load_model(tiny_model)
    image = np.random.default_rng(2).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    captured: list[dict] = []
    handle = model.transformer.register_forward_pre_hook(
        lambda m, a, kw: captured.append({k: v for k, v in kw.items()}), with_kwargs=True)  # fmt: skip
    pipe = model.pipeline("i2v")
    pipe.set_progress_bar_config(disable=True)
    pipe(prompt="a cat", negative_prompt="", num_frames=5, height=32, width=32, num_inference_steps=1, guidance_scale=1.0,
         noise_aug_strength=0.0,
         generator=torch.Generator("cpu").manual_seed(0), output_type="latent",
         **model.pipeline_inputs("i2v", Image.fromarray(image), None, 5, (32, 32)))  # fmt: skip
    handle.remove()
    pixels = torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1)[None, :, None].repeat(1, 1, 5, 1, 1)
    mask = masks.fixed_mask("first", 5, 32, 32)[None]
    with torch.no_grad():
        ours = model.inpaint_conditioning(pixels, mask)
    assert torch.allclose(captured[0]["inpaint_latents"], ours, atol=1e-4)


# ---- train, then generate: ufo-video == diffusers + load_lora_weights ------------------------------
def test_train_t2v_lora_generates_like_diffusers_after_load_lora_weights(wan_models, dataset, tmp_path):
    from diffusers import WanPipeline

    lora = _train(tmp_path, wan_models["t2v"], dataset, "t2v")
    meta = _metadata(lora)
    assert meta["ufo_format"] == "comfy" and meta["ufo_base_family"] == "wan" and "ufo_expert" not in meta
    with safe_open(str(lora), framework="pt") as handle:
        keys = list(handle.keys())
    assert all(k.startswith("diffusion_model.blocks.") for k in keys) and any(".self_attn.q.lora_A" in k for k in keys)
    ours = _generate(wan_models["t2v"], tmp_path / "ours", "--lora", f"{lora}:0.7")

    pipe = _reference_pipeline(WanPipeline, wan_models["t2v"])
    pipe.load_lora_weights(str(lora), adapter_name="ufo")
    n_modules = len(json.loads(meta["ufo_target_modules"]))
    assert _applied_modules(pipe) == n_modules == 2 * 10  # every module of the file applied (2 blocks x 10)
    pipe.set_adapters(["ufo"], [0.7])
    theirs = _diffusers_frames(pipe)
    assert ours.shape == theirs.shape == (9, 32, 32, 3)
    assert np.array_equal(ours, theirs)
    base = _generate(wan_models["t2v"], tmp_path / "base")
    assert not np.array_equal(base, ours)  # the LoRA changed the video


def test_a14b_one_lora_per_expert_trained_and_applied_to_its_expert(wan_models, dataset, tmp_path, capsys):
    from diffusers import WanPipeline

    model = wan_models["a14b"]
    # train.expert must be given for a two-expert model
    assert main(["train", str(write_config(tmp_path / "x.toml", model, dataset, tmp_path / "x"))]) == 2
    assert "set train.expert" in capsys.readouterr().err
    high = _train(tmp_path, model, dataset, "high", "train.expert=transformer")
    low = _train(tmp_path, model, dataset, "low", "train.expert=transformer_2")
    assert _metadata(high)["ufo_expert"] == "transformer" and _metadata(low)["ufo_expert"] == "transformer_2"
    ours = _generate(model, tmp_path / "ours", "--lora", f"{high}:0.5", "--lora", f"{low}:0.9")
    assert "-> transformer, " in capsys.readouterr().out  # each file's expert is said

    pipe = _reference_pipeline(WanPipeline, model)
    pipe.load_lora_weights(str(high), adapter_name="high")
    pipe.load_lora_weights(str(low), adapter_name="low", load_into_transformer_2=True)
    assert _applied_modules(pipe, "transformer") == _applied_modules(pipe, "transformer_2") == 20
    pipe.set_adapters(["high", "low"], [0.5, 0.9])
    assert np.array_equal(ours, _diffusers_frames(pipe))


def test_i2v_train_and_generate_from_a_start_image(wan_models, dataset, tmp_path):
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    model = wan_models["i2v"]
    lora = _train(tmp_path, model, dataset, "i2v", "train.train_mode=inpaint")
    image = tmp_path / "start.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(image)
    ours = _generate(model, tmp_path / "ours", "--lora", f"{lora}:0.3", "--image", str(image))
    pipe = _reference_pipeline(WanImageToVideoPipeline, model)
    pipe.load_lora_weights(str(lora), adapter_name="ufo")
    assert _applied_modules(pipe) == 2 * 12  # the image stream's add_k/add_v included
    pipe.set_adapters(["ufo"], [0.3])
    assert np.array_equal(ours, _diffusers_frames(pipe, image=Image.open(image).convert("RGB")))


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
def test_bad_wan_inputs_give_clear_errors(wan_models, tiny_model, tmp_path, capsys, dataset):
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
    # an EasyAnimate LoRA on Wan, and a Wan LoRA on EasyAnimate
    from ufo_video.lora.inject import add_lora
    from ufo_video.lora.formats import save_lora
    from ufo_video.config import LoraSection
    from ufo_video.models.registry import load_model

    ea = load_model(tiny_model, components=("transformer",))
    add_lora(ea, LoraSection(rank=2, network_alpha=2.0, target_modules="attention"), adapter_name="ufo")
    ea_file = save_lora(tmp_path / "ea.safetensors", ea, "ufo", {})
    wan = load_model(wan_models["t2v"], components=("transformer",))
    add_lora(wan, LoraSection(rank=2, network_alpha=2.0, target_modules="attention"), adapter_name="ufo")
    wan_file = save_lora(tmp_path / "wan.safetensors", wan, "ufo", {})
    gen = ["generate", "--prompt", "x", "--video-length", "5", "--sample-size", "32", "32", "--steps", "1",
           "--dtype", "fp32", "--out", str(tmp_path / "o.mp4")]  # fmt: skip
    assert "does not fit the model" in err([*gen, "--model", str(wan_models["t2v"]), "--lora", str(ea_file)])
    assert "does not fit the model" in err([*gen, "--model", str(tiny_model), "--lora", str(wan_file)])
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


def test_i2v_validation_clips_and_cached_training_equal_uncached(wan_models, dataset, tmp_path, capsys):
    """An image-only model validates from infer.validation_image_start (refused before training
    without it); the latent cache holds its first-frame conditioning and CLIP embedding, and a
    cached run's losses equal the uncached run's."""
    from test_train_helpers import losses

    model = wan_models["i2v"]
    out = tmp_path / "v"
    cfg = write_config(tmp_path / "v.toml", model, dataset, out, max_train_steps=2, checkpointing_steps=2,
                       save_state=False, validation_steps=2, validation_prompts=["a cat"])  # fmt: skip
    assert main(["train", str(cfg), "infer.num_inference_steps=1"]) == 2
    assert "infer.validation_image_start" in capsys.readouterr().err
    image = next((dataset / "train").glob("img0.png"))
    assert main(["train", str(cfg), "infer.num_inference_steps=1", f"infer.validation_image_start={image}"]) == 0
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-000002-prompt0-w0.15.mp4", "step-000002-prompt0-w1.mp4"]

    plain = tmp_path / "plain"
    cfg = write_config(tmp_path / "p.toml", model, dataset, plain, max_train_steps=2, checkpointing_steps=2,
                       save_state=False)  # fmt: skip
    assert main(["train", str(cfg)]) == 0
    cache = tmp_path / "cache"
    assert main(["data", "cache", str(cfg), f"data.cache_dir={cache}"]) == 0
    cached = tmp_path / "cached"
    assert main(["train", str(cfg), f"data.cache_dir={cache}", "data.cache_latents=true",
                 f"train.output_dir={cached}"]) == 0  # fmt: skip
    assert [round(x, 6) for _, x in losses(cached)] == [round(x, 6) for _, x in losses(plain)]


def test_every_command_on_ti2v_and_a14b_i2v(wan_models, dataset, tmp_path, capsys):
    """TI2V-5B: train (text-to-video), generate t2v and i2v (frame-0 replacement), the step cache,
    sweep, eval and lora inspect; A14B I2V: the low-noise expert trains on its own range."""
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

    low = _train(tmp_path, wan_models["a14b-i2v"], dataset, "a14b-i2v-low", "train.expert=transformer_2")
    assert _metadata(low)["ufo_expert"] == "transformer_2"


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
