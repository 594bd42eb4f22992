"""The tiny base model's training data (always) and the shipped model (src/ufo_video/assets/tiny-base):
it loads strictly and makes moving, non-noise videos that follow the prompt, which the demo's UFO
comparison relies on; its VAE is the constructed one (docs/tiny-base-model.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ufo_video.eval import metrics as M
from ufo_video.models.registry import load_model
from ufo_video import scenes

ASSET = Path(__file__).resolve().parents[1] / "src" / "ufo_video" / "assets" / "tiny-base"
# the tiny base's training code lives beside its script (scripts/tiny_base_training/), not in the library
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))
FRAMES, SIZE, STEPS, GUIDANCE = 9, 64, 12, 6.0  # the demo's generation settings
PROMPT = "a red circle moves right over a blue plain background"


@pytest.fixture(scope="module")
def model():
    assert (ASSET / "model_index.json").is_file(), f"the tiny base model is missing from {ASSET}"
    return load_model(ASSET)  # strict: every tensor present, right shape, safetensors only


def _generate(model, prompt: str, seed: int = 0, image=None) -> np.ndarray:
    """uint8 frames [F, H, W, 3] through diffusers' own inpaint pipeline (t2v, or i2v from `image`)."""
    from diffusers.pipelines.easyanimate.pipeline_easyanimate_inpaint import get_image_to_video_latent

    pipe = model.pipeline()
    pipe.set_progress_bar_config(disable=True)
    extra = {}
    if image is not None:
        video, mask = get_image_to_video_latent(image, None, FRAMES, (SIZE, SIZE))
        extra = {"video": video, "mask_video": mask}
    out = pipe(prompt=prompt, negative_prompt="", num_frames=FRAMES, height=SIZE, width=SIZE,
               num_inference_steps=STEPS, guidance_scale=GUIDANCE, generator=torch.Generator().manual_seed(seed),
               output_type="pt", **extra)  # fmt: skip
    return (out.frames[0].permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


@pytest.fixture(scope="module")
def clip(model) -> np.ndarray:
    return _generate(model, PROMPT)


@pytest.fixture(scope="module")
def fresh_scenes() -> list[scenes.Scene]:
    """Scenes the model was not trained on (a seed no training run used)."""
    rng = np.random.default_rng(2026)
    return [scenes.sample_scene(rng, FRAMES, SIZE) for _ in range(6)]


@pytest.fixture(scope="module")
def i2v_runs(model, fresh_scenes) -> list[tuple[np.ndarray, np.ndarray]]:
    """(start image, generated frames) per fresh scene; the start image is the scene's frame 0."""
    from PIL import Image

    runs = []
    for i, scene in enumerate(fresh_scenes):
        start = ((scenes.render(scene, 1, SIZE)[:, 0].transpose(1, 2, 0) + 1) * 127.5).round().astype(np.uint8)
        runs.append((start, _generate(model, scene.prompt, seed=i, image=Image.fromarray(start))))
    return runs


def test_shipped_model_is_small_and_inpaint(model):
    total = sum(f.stat().st_size for f in ASSET.rglob("*") if f.is_file())
    assert total < 8_000_000
    assert model.is_inpaint and model.info.layout == "diffusers"


def _shape_centre(frame: np.ndarray, colour: tuple[int, int, int], tol: float = 80.0) -> np.ndarray | None:
    """Mean (x, y) of the pixels within `tol` (RGB distance) of the shape's colour, None if fewer
    than 5 (the background is always darker than the shape)."""
    hit = np.linalg.norm(frame.astype(float) - np.array(colour), axis=-1) < tol
    if hit.sum() < 5:
        return None
    ys, xs = np.nonzero(hit)
    return np.array([xs.mean(), ys.mean()])


def test_i2v_keeps_the_start_frame_and_moves_the_shape_as_captioned(i2v_runs, fresh_scenes):
    along = []
    for (start, frames), scene in zip(i2v_runs, fresh_scenes):
        assert np.abs(frames[0].astype(float) - start).mean() < 15, scene.prompt
        assert M.evaluate_frames(frames)["flow_px"] > 0.2, scene.prompt
        first, last = _shape_centre(frames[0], scenes.COLOURS[scene.colour]), _shape_centre(frames[-1], scenes.COLOURS[scene.colour])
        direction = np.array(scenes.DIRECTIONS[scene.direction])
        along.append(-1.0 if first is None or last is None else float((last - first) @ direction))
    # the scenes travel 32 px; most generated shapes should cover a good part of it the right way
    assert sum(d > 8 for d in along) >= 4, along


def test_t2v_moves_and_is_not_noise(model, fresh_scenes):
    noise = np.random.default_rng(0).integers(0, 256, (FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    assert M.temporal_ssim(noise) < 0.1
    flows = []
    for i, scene in enumerate(fresh_scenes):
        frames = _generate(model, scene.prompt, seed=i)
        assert M.temporal_ssim(frames) > 0.6 and frames.std() > 20, scene.prompt  # not noise, not flat
        flows.append(M.evaluate_frames(frames)["flow_px"])
    still = M.evaluate_frames(np.stack([frames[0]] * FRAMES))["flow_px"]
    assert still < 0.05
    assert np.mean(flows) > 0.15 and sum(f > 0.1 for f in flows) >= 3, flows


def test_the_prompt_changes_the_video(model, clip):
    other = _generate(model, "a yellow square moves down over a purple gradient background")
    assert np.abs(clip.astype(float) - other).mean() > 20


# ---- training data (no model needed) ------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_scene_moves_as_its_caption_says(seed):
    scene = scenes.sample_scene(np.random.default_rng(seed), FRAMES, SIZE)
    clip = scenes.render(scene, FRAMES, SIZE)
    assert clip.shape == (3, FRAMES, SIZE, SIZE) and clip.min() >= -1 and clip.max() <= 1
    frames = (clip.transpose(1, 2, 3, 0) + 1) * 127.5
    colour = scenes.COLOURS[scene.colour]
    start, end = _shape_centre(frames[0], colour, tol=1.0), _shape_centre(frames[-1], colour, tol=1.0)  # exact colour
    expected = np.array(scenes.DIRECTIONS[scene.direction]) * scenes.SHAPE_SPEED_PX * (FRAMES - 1)
    np.testing.assert_allclose(end - start, expected, atol=1.0)  # the whole shape stays in frame
    words = scene.prompt.replace(",", " ,").split()
    assert set(words) <= set(scenes.VOCABULARY)
    assert [scene.colour, scene.shape, scene.direction] == [words[1], words[2], words[4]]
    assert ("pans" in words) == (scene.pan != "none")


def test_pan_slides_the_background():
    # pans are not in the sampled training data any more, but `render` still draws them
    scene = scenes.Scene(colour="red", shape="circle", direction="right", bg_colour="blue", pattern="striped",
                         pan="left", radius=10, start=(16, 32), bg_phase=0)  # fmt: skip
    frames = scenes.render(scene, FRAMES, SIZE)[:, :, :4]  # top rows, above the shape
    shift = scenes.PAN_SPEED_PX  # "the camera pans left": content slides right
    np.testing.assert_array_equal(frames[:, 1, :, shift:], frames[:, 0, :, :-shift])


def test_training_scenes_are_low_frequency_and_unpanned():
    rng = np.random.default_rng(1)
    sampled = [scenes.sample_scene(rng, FRAMES, SIZE) for _ in range(200)]
    assert {s.pattern for s in sampled} == set(scenes.TRAINED_PATTERNS)
    assert {s.pan for s in sampled} == {"none"}
    plain = next(s for s in sampled if s.pattern == "plain")
    bg = (scenes.render(plain, 1, SIZE)[:, 0] + 1) * 127.5  # [3, H, W]
    shape = np.all(np.abs(bg.transpose(1, 2, 0) - np.array(scenes.COLOURS[plain.colour])) < 1.0, axis=-1)
    # a plain background is one colour: 0.475 x the background colour (0.25 + 0.45 x 0.5)
    expected = 0.475 * np.array(scenes.COLOURS[plain.bg_colour], dtype=np.float32)
    np.testing.assert_allclose(bg.transpose(1, 2, 0)[~shape], np.broadcast_to(expected, bg.transpose(1, 2, 0)[~shape].shape), atol=1e-3)


def test_unknown_pattern_is_refused():
    scene = scenes.Scene(colour="red", shape="circle", direction="right", bg_colour="blue", pattern="dotted",
                         pan="none", radius=10, start=(16, 32), bg_phase=0)  # fmt: skip
    with pytest.raises(ValueError, match="dotted"):
        scenes.render(scene, FRAMES, SIZE)


def test_merges_spell_every_word_with_a_leading_space_first():
    merges = scenes.tokenizer_merges()
    assert len(merges) == len(set(merges))
    ranks = {m: i for i, m in enumerate(merges)}
    assert ranks[("Ġ", "r")] < ranks[("r", "e")]  # 'Ġred' is built before any plain 're'
    built = {a + b for a, b in merges}
    for word in scenes.VOCABULARY:
        if len(word) > 1:
            assert word in built and "Ġ" + word in built


# ---- the constructed VAE (stage 1) ---------------------------------------------------------


@pytest.fixture(scope="module")
def built_vae():
    from tiny_base_training import vae_stage

    return vae_stage.build_vae()


def test_constructed_vae_encodes_4x4_means_of_even_frames(built_vae):
    clip = torch.from_numpy(scenes.make_clips(np.random.default_rng(3), 1, FRAMES, SIZE)[0])
    with torch.no_grad():
        z = built_vae.encode(clip).latent_dist.mode()[0]  # [4, 5, 16, 16], before scaling
    assert z.shape == (4, 5, SIZE // 4, SIZE // 4)
    even = clip[0, :, ::2]  # frames 0, 2, 4, 6, 8 -> [3, 5, 64, 64]
    # hand-computed: the mean of each 4x4 pixel block, per colour channel, and the mean of R, G, B
    blocks = even.reshape(3, 5, SIZE // 4, 4, SIZE // 4, 4).mean(dim=(3, 5))
    np.testing.assert_allclose(z[:3].numpy(), blocks.numpy(), atol=2e-4)
    np.testing.assert_allclose(z[3].numpy(), blocks.mean(0).numpy(), atol=2e-4)


def test_constructed_vae_decodes_by_upsampling_and_blending_odd_frames(built_vae):
    z = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.5
    with torch.no_grad():
        video = built_vae.decode(z).sample[0]  # [3, 5, 16, 16]
    assert video.shape == (3, 5, 16, 16)
    up = z[0, :3].repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)  # nearest 4x
    for k in range(3):
        np.testing.assert_allclose(video[:, 2 * k].numpy(), up[:, k].numpy(), atol=2e-4)
    for k in (1, 2):  # frame 2k-1 lies between latent frames k-1 and k
        np.testing.assert_allclose(video[:, 2 * k - 1].numpy(), (0.5 * (up[:, k - 1] + up[:, k])).numpy(), atol=2e-4)


def test_constructed_vae_keeps_motion_and_beats_the_mean_colour(built_vae):
    from tiny_base_training import vae_stage

    check = vae_stage.check_vae(built_vae, frames=FRAMES, size=SIZE, seed=0, count=3)
    assert check["l1"] < 0.3 * check["mean_colour_l1"], check
    assert check["flow_px_reconstruction"] > 0.4 * check["flow_px_input"], check


def test_adapter_takes_compression_from_the_vae_config():
    from ufo_video.errors import ModelLoadError
    from ufo_video.models.easyanimate.layout import vae_compression
    from tiny_base_training import vae_stage

    assert vae_compression({"block_out_channels": [128, 256, 512, 512]}) == {"spatial_factor": 8, "temporal_factor": 4}
    assert vae_compression(vae_stage.vae_config()) == {"spatial_factor": 4, "temporal_factor": 2}
    with pytest.raises(ModelLoadError, match="block_out_channels"):
        vae_compression({"block_out_channels": [8]})


def test_shipped_model_compresses_4x_2x_and_keeps_every_frame(model, clip):
    assert (model.spatial_factor, model.temporal_factor) == (4, 2)
    assert model.latent_frames(FRAMES) == 5
    assert clip.shape == (FRAMES, SIZE, SIZE, 3)


def test_shipped_vae_is_the_constructed_one(model, built_vae):
    shipped = model.vae.state_dict()
    built = built_vae.state_dict()
    assert shipped.keys() == built.keys()
    for name, tensor in built.items():
        torch.testing.assert_close(shipped[name], tensor, rtol=0, atol=0, msg=name)
    # scaling_factor is calibrated on clips drawn from the last training run's seed
    import json

    from tiny_base_training import vae_stage

    seed = json.loads((ASSET / "training-report.json").read_text())["runs"][-1]["seed"]
    factor = vae_stage.calibrate_scaling(built_vae, frames=FRAMES, size=SIZE, seed=seed)
    assert model.vae.config.scaling_factor == pytest.approx(factor, rel=1e-6)


def test_training_script_writes_a_loadable_model_with_its_card(tmp_path):
    import json
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "train_tiny_base.py"
    out = tmp_path / "tiny-base"
    cmd = [sys.executable, str(script), "--out", str(out), "--work", str(tmp_path / "work"),
           "--dit-steps", "2", "--dit-batch", "2", "--pool", "4"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    again = out.parent / "continued"
    subprocess.run(cmd[:3] + [str(again)] + cmd[4:] + ["--init-from", str(out)], check=True, capture_output=True,
                   text=True, timeout=300)  # fmt: skip
    model = load_model(again)
    assert (model.spatial_factor, model.temporal_factor) == (4, 2)
    runs = json.loads((again / "training-report.json").read_text())["runs"]
    assert [r["steps"] for r in runs] == [2, 2] and runs[1]["init_from"] == str(out)
    assert runs[0]["vae"]["check"]["l1"] < runs[0]["vae"]["check"]["mean_colour_l1"]
    assert "docs/tiny-base-model.md" in (again / "README.md").read_text()
