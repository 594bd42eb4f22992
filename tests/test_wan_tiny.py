"""Tiny Wan folders (ufo_video.models.wan.tiny) and the shipped real Wan configs.

Each tiny folder must be exactly what diffusers writes and reads: it is loaded back with
diffusers' own `WanPipeline` / `WanImageToVideoPipeline.from_pretrained` (offline, see conftest)
and run for 2 steps. The real configs must rebuild the released models' exact sizes.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline, WanPipeline, WanTransformer3DModel
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from ufo_video.errors import UfoError
from ufo_video.models.wan import layout as wan_layout
from ufo_video.models.wan.tiny import SINGLE_FILE_NAME, SINGLE_FILE_PREFIX, VARIANTS, WAN_CONFIGS, make_tiny_wan

I2V = {"i2v", "a14b-i2v"}

# Exact transformer parameter counts of the released models (reference table: 1.419 B, 14.288 B,
# 16.395 B, 14.288 B per A14B expert, 5.000 B).
REAL_COUNTS = {
    "wan2.1-t2v-1.3b": {"transformer": 1_418_996_800},
    "wan2.1-t2v-14b": {"transformer": 14_288_491_584},
    "wan2.1-i2v-14b-480p": {"transformer": 16_394_878_784},
    "wan2.2-t2v-a14b": {"transformer": 14_288_491_584, "transformer_2": 14_288_491_584},
    "wan2.2-i2v-a14b": {"transformer": 14_288_901_184, "transformer_2": 14_288_901_184},
    "wan2.2-ti2v-5b": {"transformer": 4_999_787_712},
}


def test_ftfy_is_a_dependency_because_the_wan_i2v_pipeline_needs_it():
    """diffusers 0.42.1's `pipeline_wan_i2v.basic_clean` calls `ftfy.fix_text` unguarded (NameError
    without the package); ufo-video depends on ftfy (pyproject) so the I2V pipeline cleans prompts."""
    import diffusers.pipelines.wan.pipeline_wan_i2v as i2v_module

    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert '"ftfy' in pyproject
    assert i2v_module.basic_clean("caf\u00c3\u00a9") == "caf\u00e9"  # ftfy repairs mojibake


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("folder", sorted(REAL_COUNTS))
def test_real_configs_rebuild_the_released_sizes(folder):
    root = WAN_CONFIGS / folder
    index = json.loads((root / "model_index.json").read_text())
    for expert, expected in REAL_COUNTS[folder].items():
        with torch.device("meta"):
            model = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(root / expert))
        assert _count(model) == expected, (folder, expert)
        assert index[expert] == ["diffusers", "WanTransformer3DModel"]
    scheduler = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "UniPCMultistepScheduler"
    assert scheduler["prediction_type"] == "flow_prediction" and scheduler["use_flow_sigmas"] is True
    assert scheduler["flow_shift"] == (5.0 if "ti2v" in folder else 3.0)
    assert index["boundary_ratio"] == {"wan2.2-t2v-a14b": 0.875, "wan2.2-i2v-a14b": 0.9}.get(folder)
    assert index["expand_timesteps"] is (folder == "wan2.2-ti2v-5b")
    assert index["transformer_2"] == (["diffusers", "WanTransformer3DModel"] if "a14b" in folder else [None, None])
    vae = json.loads((root / "vae" / "config.json").read_text())
    assert vae.get("z_dim", 16) == (48 if "ti2v" in folder else 16)
    text = json.loads((root / "text_encoder" / "config.json").read_text())
    assert (text["model_type"], text["d_model"], text["num_layers"], text["vocab_size"]) == ("umt5", 4096, 24, 256384)
    has_clip = folder == "wan2.1-i2v-14b-480p"
    assert (root / "image_encoder" / "config.json").is_file() is has_clip
    assert (root / "image_processor" / "preprocessor_config.json").is_file() is has_clip
    assert (root / "README.md").is_file()


def _run(path: Path, variant: str, prompt: str = "a red cat walks") -> tuple[np.ndarray, object]:
    cls = WanImageToVideoPipeline if variant in I2V else WanPipeline
    pipe = cls.from_pretrained(str(path))
    calls = {"transformer": 0, "transformer_2": 0}
    for name in calls:
        module = getattr(pipe, name, None)
        if module is not None:
            module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    kwargs = dict(
        prompt=prompt, negative_prompt="bad quality", num_frames=9, height=32, width=32, num_inference_steps=2,
        guidance_scale=2.0, output_type="np", generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    if variant in I2V:
        kwargs["image"] = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    frames = pipe(**kwargs).frames
    return np.asarray(frames), SimpleNamespace(pipe=pipe, calls=calls)


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_loads_and_runs_in_diffusers(tmp_path, variant):
    path = make_tiny_wan(tmp_path / variant, variant)
    frames, info = _run(path, variant)
    assert frames.shape == (1, 9, 32, 32, 3)
    assert np.isfinite(frames).all()
    config = info.pipe.config
    assert config.boundary_ratio == {"a14b": 0.875, "a14b-i2v": 0.9}.get(variant)
    assert config.expand_timesteps is (variant == "ti2v")
    assert info.pipe.vae.config.z_dim == (48 if variant == "ti2v" else 16)
    assert info.pipe.transformer.config.in_channels == {"i2v": 36, "a14b-i2v": 36, "ti2v": 48}.get(variant, 16)
    if variant == "i2v":
        assert info.pipe.image_encoder is not None and info.pipe.transformer.config.image_dim is not None
    # Both 2.2 experts run (first step high noise, second low noise); others have one expert.
    two = variant in ("a14b", "a14b-i2v")
    assert info.calls["transformer"] > 0 and (info.calls["transformer_2"] > 0) is two
    assert (path / "transformer_2" / "config.json").is_file() is two


def test_tokenizer_is_offline_reloadable_and_tells_prompts_apart(tmp_path):
    from transformers import AutoTokenizer

    path = make_tiny_wan(tmp_path / "t2v", "t2v")
    assert (path / "tokenizer" / "tokenizer.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(str(path / "tokenizer"))
    prompts = ["a red cat walks on the grass", "A blue dog runs, 2 times!", "a red cat walks on the glass"]
    ids = [tokenizer(p).input_ids for p in prompts]
    assert len({tuple(i) for i in ids}) == len(prompts)
    assert all(i[-1] == tokenizer.eos_token_id == 1 for i in ids)
    assert all(tokenizer.unk_token_id not in i for i in ids)
    assert tokenizer.pad_token_id == 0

    pipe = WanPipeline.from_pretrained(str(path))
    assert [pipe.tokenizer(p).input_ids for p in prompts] == ids
    embeds = [pipe.encode_prompt(p, do_classifier_free_guidance=False, max_sequence_length=16)[0] for p in prompts[:2]]
    assert not torch.allclose(embeds[0], embeds[1])


def test_single_file_layout_holds_original_names_of_the_same_weights(tmp_path):
    seed = 3
    plain = make_tiny_wan(tmp_path / "plain", "a14b", seed=seed)
    single = make_tiny_wan(tmp_path / "single", "a14b", seed=seed, layout="single-file")
    for expert in ("transformer", "transformer_2"):
        folder = single / expert
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", SINGLE_FILE_NAME]
        with safe_open(str(folder / SINGLE_FILE_NAME), "pt") as handle:
            keys = list(handle.keys())
        assert all(k.startswith(SINGLE_FILE_PREFIX) for k in keys)
        assert SINGLE_FILE_PREFIX + "blocks.0.self_attn.q.weight" in keys
        assert wan_layout.key_naming(keys) == "original"

        model = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(folder))
        state = wan_layout.original_to_diffusers_state_dict(load_file(str(folder / SINGLE_FILE_NAME)))
        model.load_state_dict(state, strict=True)
        reference = WanTransformer3DModel.from_pretrained(str(plain / expert)).state_dict()
        assert set(state) == set(reference)
        assert all(torch.equal(state[k], reference[k]) for k in reference)
    # Everything else is the diffusers layout, file for file.
    others = {p.relative_to(plain) for p in plain.rglob("*") if p.is_file() and "transformer" not in p.parts[len(plain.parts)]}
    assert others == {p.relative_to(single) for p in single.rglob("*") if p.is_file() and "transformer" not in p.parts[len(single.parts)]}


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    a = make_tiny_wan(tmp_path / "a", "ti2v", seed=1)
    b = make_tiny_wan(tmp_path / "b", "ti2v", seed=1)
    c = make_tiny_wan(tmp_path / "c", "ti2v", seed=2)
    name = "transformer/diffusion_pytorch_model.safetensors"
    sa, sb, sc = (load_file(str(p / name)) for p in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_bad_requests_are_refused(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep me")
    with pytest.raises(UfoError, match="not an empty folder"):
        make_tiny_wan(tmp_path / "full", "t2v")
    assert (tmp_path / "full" / "x.txt").read_text() == "keep me"
    with pytest.raises(UfoError, match="unknown Wan variant 'flf2v'"):
        make_tiny_wan(tmp_path / "new", "flf2v")
    with pytest.raises(UfoError, match="unknown Wan layout"):
        make_tiny_wan(tmp_path / "new", "t2v", layout="comfy")
    assert not (tmp_path / "new").exists()


def test_ti2v_folder_also_serves_image_to_video(tmp_path):
    """TI2V-5B's image-to-video is diffusers' I2V pipeline on the same folder (expand_timesteps,
    frame-0 latent replaced by the image latent; no image encoder)."""
    path = make_tiny_wan(tmp_path / "ti2v", "ti2v")
    frames, info = _run_i2v_on(path)
    assert info.config.expand_timesteps is True and info.image_encoder is None
    assert frames.shape == (1, 9, 32, 32, 3) and np.isfinite(frames).all()


def _run_i2v_on(path: Path) -> tuple[np.ndarray, WanImageToVideoPipeline]:
    pipe = WanImageToVideoPipeline.from_pretrained(str(path))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    frames = pipe(
        image=image, prompt="a cat", num_frames=9, height=32, width=32, num_inference_steps=2, output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).frames  # fmt: skip
    return np.asarray(frames), pipe
