"""Training a UFO LoRA on LTX-2 through the generic trainer, on tiny LTX-2 folders.

- `ufo-video train` (text-to-video, 2 steps) writes a LoRA in the LTX-2 format that diffusers'
  `LTX2Pipeline.load_lora_weights` applies to every module, and generation with it equals the pipeline;
- cached training (latents, connector outputs, first-frame latents) equals encoding every step;
- the image-to-video conditioning: what `LTX2ImageToVideoPipeline` gives its transformer at its
  first step equals what `training_conditioning` + `predict` give it for the same image (noise aside).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from test_ltx2 import _applied_modules, _diffusers_frames, _file_keys, _generate, _reference_pipeline
from test_train_helpers import losses, lora, make_dataset, max_diff, write_config
from ufo_video.cli import main

FRAMES9 = "data.video_sample_n_frames=9"  # LTX-2 takes 8k+1 frames; 9 gives two latent frames
# the tiny VAE cannot decode one latent pixel (32 px / 32): validation clips need 64
SIZE64 = [f"data.{k}_sample_size=64" for k in ("image", "video", "token")]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ltx2t")
    for variant in ("t2v", "i2v"):
        assert main(["model", "make-tiny", str(root / variant), "--family", "ltx2", "--variant", variant]) == 0
    return {v: root / v for v in ("t2v", "i2v")}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds"), images=3, videos=1)


def _config(tmp_path: Path, model: Path, data: Path, name: str, mode: str) -> Path:
    return write_config(tmp_path / f"{name}.toml", model, data, tmp_path / name, max_train_steps=2, checkpointing_steps=2,
                        save_state=False, learning_rate=5e-2, train_mode=mode)  # fmt: skip


def test_train_t2v_writes_a_lora_diffusers_applies_fully_and_generate_equals_the_pipeline(models, dataset, tmp_path,
                                                                                          capsys):
    """Also at a chosen frame rate (`train.fps`): the start summary says it, the LoRA records it, the
    validation clips are made (the pipeline told, the file written) at it."""
    from diffusers import LTX2Pipeline

    cfg = _config(tmp_path, models["t2v"], dataset, "t2v", "normal")
    assert main(["train", str(cfg), FRAMES9, "lora.target_modules=all-linear", "train.fps=30",
                 "train.validation_steps=2", 'train.validation_prompts=["a red ball"]', "train.validation_weights=[1.0]",
                 "infer.num_inference_steps=2", *SIZE64]) == 0
    assert "frame rate: 30 fps (train.fps" in capsys.readouterr().out
    import av

    (clip,) = (tmp_path / "t2v" / "samples").glob("*.mp4")
    with av.open(str(clip)) as container:
        assert container.streams.video[0].average_rate == 30
    steps = losses(tmp_path / "t2v")
    assert [s for s, _ in steps] == [1, 2] and all(math.isfinite(v) for _, v in steps)
    trained = tmp_path / "t2v" / "checkpoint-2.safetensors"
    keys = _file_keys(trained)
    assert keys and all(k.startswith("diffusion_model.transformer_blocks.") for k in keys)
    assert len(keys) // 2 == 2 * 28  # 2 blocks x 28 linears of the all-linear preset
    with safe_open(str(trained), framework="pt") as handle:
        assert any(handle.get_tensor(k).abs().max() > 0 for k in keys if "lora_B" in k)  # it trained
        assert handle.metadata()["ufo_train_fps"] == "30"

    ours = _generate(models["t2v"], tmp_path / "ours", "--lora", f"{trained}:0.8")
    pipe = _reference_pipeline(LTX2Pipeline, models["t2v"])
    pipe.load_lora_weights(str(trained), adapter_name="ufo")
    assert _applied_modules(pipe) == len(keys) // 2  # every module of the file applied
    pipe.set_adapters(["ufo"], [0.8])
    assert np.array_equal(ours, _diffusers_frames(pipe))
    assert not np.array_equal(ours, _generate(models["t2v"], tmp_path / "base"))  # the LoRA changed the video


@pytest.mark.parametrize("mode", ["normal", "inpaint"])
def test_cached_training_equals_uncached(models, dataset, tmp_path, mode):
    """Bitwise, as tests/test_train_cache.py checks the other families: the cache holds the
    latents, the connectors' outputs and (inpaint) the first-frame latents; the audio noise is
    redrawn from the same generators in the same order."""
    model = models["i2v" if mode == "inpaint" else "t2v"]
    plain = _config(tmp_path, model, dataset, "plain", mode)
    assert main(["train", str(plain), FRAMES9]) == 0
    cached = _config(tmp_path, model, dataset, "cached", mode)
    cache_args = [FRAMES9, f"data.cache_dir={tmp_path / 'cache'}"]
    assert main(["data", "cache", str(cached), *cache_args]) == 0
    assert main(["train", str(cached), "data.cache_latents=true", *cache_args]) == 0
    assert losses(tmp_path / "plain") == losses(tmp_path / "cached")
    assert all(math.isfinite(v) for _, v in losses(tmp_path / "plain"))
    last = "checkpoint-2.safetensors"
    assert max_diff(lora(tmp_path / "plain" / last), lora(tmp_path / "cached" / last)) == 0.0


@pytest.mark.parametrize("fps", [None, 30.0])
def test_i2v_training_conditioning_equals_the_pipeline_input(models, fps):
    """Capture the transformer's keyword arguments at `LTX2ImageToVideoPipeline`'s first step
    (forward pre-hook; video and audio guidance 1, so no negative batch; 2 steps: one NaNs the terminal shift) and compare them with `training_conditioning` +
    `transformer_inputs` (what `predict` passes) for the same image, at the same timestep: the
    clean first latent frame (CRF-recompressed image encoded alone), the per-token timesteps
    t * (1 - mask), text, sizes, frame rate. Noise aside: the noisy frames are taken from the
    capture, the audio stream compared by shape and timestep. At the default 24 fps and at a
    `train.fps` of 30 (the pipeline then generating at 30), whose audio stream is shorter."""
    from ufo_video.models.registry import load_model

    model = load_model(models["i2v"])
    model.training_fps = model.resolve_training_fps(fps)  # what the trainer's setup does with train.fps
    assert model.frame_rate() == (fps or 24.0)
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    captured: list[dict] = []
    handle = model.transformer.register_forward_pre_hook(
        lambda m, a, kw: captured.append({k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}),
        with_kwargs=True)  # fmt: skip
    pipe = model.pipeline("i2v")
    pipe.set_progress_bar_config(disable=True)
    pipe(image=Image.fromarray(image), prompt="a cat", num_frames=9, height=64, width=64, num_inference_steps=2,
         guidance_scale=1.0, audio_guidance_scale=1.0, frame_rate=model.frame_rate(), generator=torch.Generator("cpu").manual_seed(0),
         output_type="latent")  # fmt: skip
    handle.remove()
    seen = captured[0]
    assert seen["hidden_states"].shape[0] == 1  # no guidance batch: the conditional pass alone

    pixels = torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1)[None, :, None].repeat(1, 1, 9, 1, 1)
    with torch.no_grad():
        latents = model.encode_video(pixels)
        cond, kinds = model.training_conditioning(pixels, latents, [torch.Generator().manual_seed(0)], "inpaint")
        text = model.encode_text(["a cat"], "cpu")
    assert kinds == ["first"]
    b, c, f, h, w = latents.shape
    from diffusers import LTX2Pipeline

    noisy = LTX2Pipeline._unpack_latents(seen["hidden_states"], f, h, w, 1, 1)  # the pipeline's noise
    t = seen["audio_timestep"]
    ours = model.transformer_inputs(noisy, t, text, cond)
    frame0 = h * w  # tokens of latent frame 0
    assert torch.allclose(seen["hidden_states"][:, :frame0], ours["hidden_states"][:, :frame0], atol=1e-5)
    assert torch.equal(seen["hidden_states"][:, frame0:], ours["hidden_states"][:, frame0:])
    assert torch.equal(seen["timestep"], ours["timestep"]) and (seen["timestep"][:, :frame0] == 0).all()
    assert (seen["timestep"][:, frame0:] == t[:, None]).all()
    for key in ("encoder_hidden_states", "audio_encoder_hidden_states", "encoder_attention_mask",
                "audio_encoder_attention_mask", "audio_timestep", "sigma"):  # fmt: skip
        assert torch.equal(seen[key], ours[key]), key
    for key in ("num_frames", "height", "width", "fps", "audio_num_frames", "isolate_modalities", "use_cross_timestep"):
        assert seen[key] == ours[key], key
    assert seen["audio_hidden_states"].shape == ours["audio_hidden_states"].shape
    assert ours["audio_num_frames"] == {None: 9, 30.0: 8}[fps]  # round(9 frames / fps * 25 latents/s)
    assert seen["video_coords"] is not None  # the pipeline precomputes what the transformer derives from these sizes
    coords = model.transformer.rope.prepare_video_coords(1, f, h, w, noisy.device, fps=ours["fps"])
    assert torch.equal(seen["video_coords"], coords)


def test_i2v_loss_ignores_the_given_first_frame(models):
    """The loss mask covers every latent frame but the first; the trainer's loss with it is the
    mean over the other frames only."""
    from ufo_video.models.registry import model_shell
    from ufo_video.train.objective import flow_loss

    shell = model_shell(models["i2v"])
    latents = torch.zeros(2, 4, 3, 1, 1)
    assert shell.loss_mask({"audio_noise": torch.zeros(1)}, latents) is None
    mask = shell.loss_mask({"first_latent": torch.zeros(1)}, latents)
    assert mask.shape == (2, 1, 3, 1, 1) and mask[:, :, 0].sum() == 0 and mask[:, :, 1:].min() == 1
    pred, target = torch.zeros_like(latents), torch.zeros_like(latents)
    pred[:, :, 0] = 100.0  # a wrong prediction on the given frame costs nothing
    pred[:, :, 1:] = 1.0
    assert flow_loss(pred, target, mask).item() == 1.0
    assert flow_loss(pred, target).item() > 1.0  # the default (no mask) is the plain mean, unchanged


def test_train_fps_is_refused_for_a_model_without_frame_rate_conditioning(tiny_model, dataset, tmp_path, capsys):
    """`train.fps` on a family whose model takes no frame rate would change nothing: one line, exit 2."""
    cfg = _config(tmp_path, tiny_model, dataset, "ea", "normal")
    assert main(["train", str(cfg), "train.fps=30"]) == 2
    err = capsys.readouterr().err
    assert "train.fps=30" in err and "take no frame rate" in err
    assert not (tmp_path / "ea").exists() or not list((tmp_path / "ea").glob("checkpoint-*"))
