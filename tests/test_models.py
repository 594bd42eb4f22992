"""Model layer: tiny-model round trips, both layouts, strict loading, check, memory modes, quirks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import REAL_12B_CONFIGS
from ufo_video.cli import main
from ufo_video.errors import ModelLoadError
from ufo_video.models.easyanimate import EasyAnimateAdapter
from ufo_video.models.registry import load_model


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _forward(model: EasyAnimateAdapter, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 4, 3, 8, 8, generator=g)
    cond = torch.randn(1, 5, 3, 8, 8, generator=g)
    text = model.encode_text(["a red ball rolls"], "cpu")
    with torch.no_grad():
        return model.predict(latents, torch.tensor([500.0]), text, {"inpaint_latents": cond})


def test_both_layouts_load_and_agree(tiny_models: dict[str, Path]) -> None:
    a = load_model(tiny_models["diffusers"])
    b = load_model(tiny_models["original"])
    assert (a.info.layout, b.info.layout) == ("diffusers", "original")
    assert a.info.variant == b.info.variant == "inp"
    assert torch.equal(_forward(a), _forward(b))


def test_original_layout_really_uses_attn2_names(tiny_models: dict[str, Path]) -> None:
    keys = load_file(str(tiny_models["original"] / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert any(".attn2.to_q." in k for k in keys) and not any("add_q_proj" in k for k in keys)


def test_variant_detection(tiny_models: dict[str, Path]) -> None:
    assert EasyAnimateAdapter.inspect(tiny_models["t2v"]).variant == "t2v"
    assert EasyAnimateAdapter.inspect(tiny_models["original"]).variant == "inp"


def test_make_tiny_round_trip_through_diffusers_from_pretrained(tiny_models: dict[str, Path]) -> None:
    """A diffusers-layout tiny model is a real diffusers folder: plain from_pretrained loads it."""
    from diffusers import EasyAnimateTransformer3DModel

    ours = load_model(tiny_models["diffusers"], components=("transformer",)).transformer
    theirs = EasyAnimateTransformer3DModel.from_pretrained(tiny_models["diffusers"], subfolder="transformer")
    for (k1, v1), (k2, v2) in zip(sorted(ours.state_dict().items()), sorted(theirs.state_dict().items())):
        assert k1 == k2 and torch.equal(v1, v2)


def test_encode_text_matches_pipeline(tiny_model: Path) -> None:
    model = load_model(tiny_model)
    ours = model.encode_text(["a cat", "two dogs"], "cpu")
    pe, _, pm, _ = model.pipeline().encode_prompt(
        ["a cat", "two dogs"], device="cpu", do_classifier_free_guidance=False, dtype=torch.float32
    )
    assert set(ours) == set(model.text_items) == {"embeds", "mask"}
    assert torch.equal(ours["embeds"], pe) and torch.equal(ours["mask"], pm)


def test_deleted_tensor_is_refused_by_name(tiny_model: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model, tmp_path / "m")
    wfile = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(wfile))
    del state["transformer_blocks.1.attn1.add_k_proj.weight"]
    save_file(state, str(wfile))
    with pytest.raises(ModelLoadError, match=r"missing tensors \(1\): transformer_blocks\.1\.attn1\.add_k_proj\.weight"):
        load_model(folder)
    assert main(["model", "check", str(folder)]) == 2
    assert main(["model", "check", str(folder), "--meta"]) == 2


def test_shape_mismatch_and_unexpected_are_listed(tiny_model: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model, tmp_path / "m")
    wfile = folder / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(wfile))
    key = next(k for k in state if k.endswith("conv_in.conv.weight") or k.endswith("conv_in.weight"))
    state[key] = torch.zeros(1)
    state["stray.weight"] = torch.zeros(2)
    save_file(state, str(wfile))
    with pytest.raises(ModelLoadError) as err:
        load_model(folder)
    assert "stray.weight" in str(err.value) and key in str(err.value) and "shape mismatches" in str(err.value)


def test_mixed_layout_is_refused(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(tiny_models["original"], tmp_path / "m")
    wfile = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(wfile))
    state["transformer_blocks.0.attn1.add_q_proj.weight"] = state["transformer_blocks.0.attn2.to_q.weight"].clone()
    save_file(state, str(wfile))
    with pytest.raises(ModelLoadError, match="mixes layouts"):
        load_model(folder)


def test_truncated_safetensors(tiny_model: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model, tmp_path / "m")
    wfile = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    data = wfile.read_bytes()
    wfile.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"diffusion_pytorch_model\.safetensors: unreadable"):
        load_model(folder)


def test_missing_subfolder_and_non_model(tiny_model: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model, tmp_path / "m")
    shutil.rmtree(folder / "tokenizer")
    with pytest.raises(ModelLoadError, match="missing subfolder 'tokenizer/'"):
        load_model(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a model folder"):
        load_model(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "nope")


def test_pickle_weights_are_refused(tiny_model: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model, tmp_path / "m")
    wfile = folder / "vae" / "diffusion_pytorch_model.safetensors"
    wfile.rename(wfile.with_suffix(".bin"))
    with pytest.raises(ModelLoadError, match="only pickle weights"):
        load_model(folder)


def test_cli_check_reports_layout_and_counts(tiny_models: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["model", "check", str(tiny_models["original"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layout"] == "original" and report["variant"] == "inp"
    counts = {c["name"]: c["parameters"] for c in report["components"]}
    model = load_model(tiny_models["original"])
    assert counts["transformer"] == sum(p.numel() for p in model.transformer.parameters())
    assert set(report["memory_gib"]) == {
        "model_full_load", "model_cpu_offload", "model_cpu_offload_and_qfloat8", "model_cpu_offload_and_fp8_scaled",
        "sequential_cpu_offload", "group_offload"
    }  # fmt: skip


def test_meta_check_of_real_12b_config(capsys: pytest.CaptureFixture) -> None:
    assert main(["model", "check", str(REAL_12B_CONFIGS), "--meta"]) == 0
    out = capsys.readouterr().out
    assert "11,799,265,856" in out and "configs only" in out


def test_make_tiny_refuses_non_empty_dir(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("keep me")
    assert main(["model", "make-tiny", str(tmp_path / "x")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "x" / "f").read_text() == "keep me"


def test_cache_mag_vae_quirk_is_wrapped(tiny_model: Path) -> None:
    """diffusers 0.42.1 reads vae.config.cache_mag_vae, which AutoencoderKLMagvit never sets.
    If diffusers fixes this, the first assertion fails and the wrapper can go."""
    from diffusers import AutoencoderKLMagvit

    bare = AutoencoderKLMagvit(block_out_channels=[8] * 4, latent_channels=4, layers_per_block=1, norm_num_groups=2)
    assert "cache_mag_vae" not in bare.config
    model = load_model(tiny_model)
    assert model.vae.config.cache_mag_vae is True
    pipe = model.pipeline()
    video = torch.rand(1, 3, 5, 32, 32)
    mask = torch.full((1, 1, 5, 32, 32), 255.0)
    mask[:, :, 0] = 0
    out = pipe(prompt="x", negative_prompt="", video=video, mask_video=mask, num_frames=5, height=32, width=32,
               num_inference_steps=1, output_type="pt")  # fmt: skip
    assert out.frames.shape == (1, 5, 3, 32, 32)


def test_memory_modes_on_cpu(tiny_model: Path) -> None:
    from ufo_video.models.memory import apply_memory_mode

    for mode in ("model_full_load", "model_cpu_offload", "sequential_cpu_offload", "group_offload",
                 "model_cpu_offload_and_qfloat8", "model_cpu_offload_and_fp8_scaled"):  # fmt: skip
        model = load_model(tiny_model)
        pipe = model.pipeline()
        plan = apply_memory_mode(pipe, mode, torch.device("cpu"), torch.float32)
        assert plan.device == "cpu"
        assert (plan.notice is None) == (mode == "model_full_load"), mode
        out = pipe(prompt="x", negative_prompt="", num_frames=5, height=32, width=32, num_inference_steps=1,
                   output_type="pt")  # fmt: skip
        assert torch.isfinite(out.frames).all()
    weight = model.transformer.transformer_blocks[0].attn1.to_q.weight
    assert weight.dtype == torch.float8_e4m3fn


def test_predict_requires_conditioning_for_inp(tiny_model: Path) -> None:
    model = load_model(tiny_model)
    text = {"embeds": torch.zeros(1, 4, 16), "mask": torch.ones(1, 4, dtype=torch.long)}
    with pytest.raises(ValueError, match="inpaint_latents"):
        model.predict(torch.zeros(1, 4, 1, 4, 4), torch.tensor([1.0]), text)


def test_tiny_tokenizer_really_tokenizes(tiny_model: Path) -> None:
    """Different prompts must give different tokens and embeddings (an empty BPE would not)."""
    model = load_model(tiny_model)
    ids = model.tokenizer(["a red ball", "the blue cats"]).input_ids
    assert len(ids[0]) >= 5 and ids[0] != ids[1]
    assert len(model.tokenizer("<|im_start|>").input_ids) == 1
    text = model.encode_text(["a red ball", "the blue cats"], "cpu")
    assert not torch.equal(text["embeds"][0], text["embeds"][1])
