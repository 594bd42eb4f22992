"""The tiny base model's training data (always) and the shipped model (src/ufo_video/assets/tiny-base):
it loads strictly and makes moving, non-noise videos that follow the prompt, which the demo's UFO
comparison relies on. The model tests are skipped while no model is shipped (see
docs/tiny-base-model.md, "Status")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ufo_video.eval import metrics as M
from ufo_video.models.registry import load_model
from ufo_video.models.tiny_base_training import scenes

ASSET = Path(__file__).resolve().parents[1] / "src" / "ufo_video" / "assets" / "tiny-base"
FRAMES, SIZE, STEPS, GUIDANCE = 9, 64, 8, 4.0
PROMPT = "a red circle moves right over a blue striped background"
COLOURS = {"red": np.array([225, 40, 40]), "yellow": np.array([235, 215, 40])}


@pytest.fixture(scope="module")
def model():
    if not (ASSET / "model_index.json").is_file():
        pytest.skip(f"no tiny base model shipped at {ASSET} yet (docs/tiny-base-model.md)")
    return load_model(ASSET)  # strict: every tensor present, right shape, safetensors only


def _generate(model, prompt: str, seed: int = 0) -> np.ndarray:
    pipe = model.pipeline()
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt=prompt, negative_prompt="", num_frames=FRAMES, height=SIZE, width=SIZE,
               num_inference_steps=STEPS, guidance_scale=GUIDANCE, generator=torch.Generator().manual_seed(seed),
               output_type="pt")  # fmt: skip
    return (out.frames[0].permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


@pytest.fixture(scope="module")
def clip(model) -> np.ndarray:
    return _generate(model, PROMPT)


def test_shipped_model_is_small_and_inpaint(model):
    total = sum(f.stat().st_size for f in ASSET.rglob("*") if f.is_file())
    assert total < 8_000_000
    assert model.is_inpaint and model.info.layout == "diffusers"


def test_t2v_clip_moves(clip):
    static = np.stack([clip[0]] * FRAMES)
    moving, still = M.evaluate_frames(clip), M.evaluate_frames(static)
    assert still["flow_px"] < 0.05
    assert moving["flow_px"] > 0.5, moving
    assert moving["dynamic_pairs"] > 0.5, moving


def test_t2v_clip_is_not_noise(clip):
    noise = np.random.default_rng(0).integers(0, 256, clip.shape, dtype=np.uint8)
    assert M.temporal_ssim(noise) < 0.1
    assert M.temporal_ssim(clip) > 0.4
    assert clip.std() > 20  # not a flat frame either


def _fraction_near(frames: np.ndarray, colour: np.ndarray, tol: float = 70.0) -> float:
    return float((np.linalg.norm(frames.astype(float) - colour, axis=-1) < tol).mean())


def test_prompt_picks_the_shape_colour(model, clip):
    yellow = _generate(model, PROMPT.replace("red", "yellow"))
    assert _fraction_near(clip, COLOURS["red"]) > _fraction_near(yellow, COLOURS["red"]) + 0.01
    assert _fraction_near(yellow, COLOURS["yellow"]) > _fraction_near(clip, COLOURS["yellow"]) + 0.01


# ---- training data (no model needed) ------------------------------------------------------


def _centroid(frame: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Mean (x, y) of the pixels of exactly the shape's colour (background is always darker)."""
    hit = np.all(np.abs(frame - np.array(colour)) < 1.0, axis=-1)
    ys, xs = np.nonzero(hit)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("seed", range(6))
def test_scene_moves_as_its_caption_says(seed):
    scene = scenes.sample_scene(np.random.default_rng(seed), FRAMES, SIZE)
    clip = scenes.render(scene, FRAMES, SIZE)
    assert clip.shape == (3, FRAMES, SIZE, SIZE) and clip.min() >= -1 and clip.max() <= 1
    frames = (clip.transpose(1, 2, 3, 0) + 1) * 127.5
    start, end = _centroid(frames[0], scenes.COLOURS[scene.colour]), _centroid(frames[-1], scenes.COLOURS[scene.colour])
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
