"""The LTX-2 LoRA file format: written from a PEFT-wrapped transformer, loaded by diffusers'
`LTX2Pipeline.load_lora_weights` with every module applied and the same outputs; names checked
against diffusers' own LTX-2 LoRA conversion."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from ufo_video.models.ltx2 import lora_format
from ufo_video.models.ltx2.tiny import make_tiny_ltx2


@pytest.fixture(scope="module", params=["2.0", "2.3"])
def folder(request, tmp_path_factory):
    return make_tiny_ltx2(tmp_path_factory.mktemp("ltx2lora") / request.param, version=request.param)


def _inputs(transformer):
    c = transformer.config
    g = torch.Generator().manual_seed(3)
    frames, h, w, audio_frames, text = 2, 2, 3, 5, 16
    video_ctx = c.cross_attention_dim if not c.use_prompt_embeddings else c.caption_channels
    audio_ctx = c.audio_cross_attention_dim if not c.use_prompt_embeddings else c.caption_channels
    mask = torch.ones(1, text)
    mask[:, :4] = 0  # left padding, as the pipeline gives it
    return dict(
        hidden_states=torch.randn(1, frames * h * w, c.in_channels, generator=g),
        audio_hidden_states=torch.randn(1, audio_frames, c.audio_in_channels, generator=g),
        encoder_hidden_states=torch.randn(1, text, video_ctx, generator=g),
        audio_encoder_hidden_states=torch.randn(1, text, audio_ctx, generator=g),
        timestep=torch.tensor([700.0]), sigma=torch.tensor([700.0]),
        encoder_attention_mask=mask, audio_encoder_attention_mask=mask,
        num_frames=frames, height=h, width=w, fps=24.0, audio_num_frames=audio_frames, return_dict=False,
    )  # fmt: skip


def _linear_names(transformer):
    return [n for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)]


def test_names_match_diffusers_conversion(folder):
    from diffusers import LTX2VideoTransformer3DModel
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_ltx2_lora_to_diffusers

    transformer = LTX2VideoTransformer3DModel.from_pretrained(str(folder / "transformer"))
    names = _linear_names(transformer)
    assert any(n.startswith("proj_in") for n in names) and any(n.startswith("time_embed") for n in names)
    original = {lora_format.PREFIX + lora_format.to_original_module_name(n) + ".lora_A.weight": n for n in names}
    assert "diffusion_model.patchify_proj.lora_A.weight" in original
    converted = _convert_non_diffusers_ltx2_lora_to_diffusers({k: torch.zeros(1) for k in original})
    assert sorted(converted) == sorted(f"transformer.{n}.lora_A.weight" for n in names)
    assert all(lora_format.from_original_module_name(lora_format.to_original_module_name(n)) == n for n in names)


def _peft_wrapped(folder):
    from diffusers import LTX2VideoTransformer3DModel
    from peft import LoraConfig

    transformer = LTX2VideoTransformer3DModel.from_pretrained(str(folder / "transformer")).eval()
    targets = [n for n in _linear_names(transformer) if n.startswith("transformer_blocks.")]
    odd = targets[0]  # one module of another rank and alpha: per-module scales must survive
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, rank_pattern={odd: 2}, alpha_pattern={odd: 1})
    transformer.add_adapter(config, adapter_name="ufo")
    g = torch.Generator().manual_seed(1)
    for name, p in transformer.named_parameters():
        if "lora_" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.1
    return transformer, targets


def test_diffusers_pipeline_loads_every_module_with_the_same_output(folder, tmp_path):
    from diffusers import LTX2Pipeline

    wrapped, targets = _peft_wrapped(folder)
    inputs = _inputs(wrapped)
    with torch.no_grad():
        expected = wrapped(**inputs)
    path = lora_format.save(tmp_path / "ufo.safetensors", wrapped, "ufo")
    keys = list(load_file(str(path)))
    assert all(k.startswith("diffusion_model.") and (k.endswith(".lora_A.weight") or k.endswith(".lora_B.weight")) for k in keys)
    assert len(keys) == 2 * len(targets)

    pipe = LTX2Pipeline.from_pretrained(str(folder))
    pipe.load_lora_weights(str(path), adapter_name="ufo")
    applied = [n for n, m in pipe.transformer.named_modules() if "ufo" in getattr(m, "lora_A", {})]
    assert sorted(applied) == sorted(targets)
    with torch.no_grad():
        got = pipe.transformer(**inputs)
    for e, o in zip(expected, got):
        torch.testing.assert_close(o, e, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # and the LoRA does something
        pipe.transformer.disable_lora()
        base = pipe.transformer(**inputs)[0]
    assert (base - expected[0]).abs().max() > 1e-3


def test_own_reader_round_trips_and_folds_alpha_keys(folder, tmp_path):
    from diffusers import LTX2VideoTransformer3DModel

    wrapped, targets = _peft_wrapped(folder)
    inputs = _inputs(wrapped)
    with torch.no_grad():
        expected = wrapped(**inputs)[0]
    path = lora_format.save(tmp_path / "ufo.safetensors", wrapped, "ufo")
    fresh = LTX2VideoTransformer3DModel.from_pretrained(str(folder / "transformer")).eval()
    assert lora_format.apply_to_transformer(fresh, lora_format.load(path), "ufo") == len(targets)
    with torch.no_grad():
        torch.testing.assert_close(fresh(**inputs)[0], expected, rtol=1e-5, atol=1e-5)

    # a file with `.alpha` keys (another trainer's) reads as the same scale-1 LoRA
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.endswith(".lora_B.weight"))
    rank = tensors[key].shape[1]
    with_alpha = dict(tensors)
    with_alpha[key] = tensors[key] * 2
    with_alpha[key.replace(".lora_B.weight", ".alpha")] = torch.tensor(float(rank) / 2)
    a = lora_format.from_file_tensors(tensors)
    b = lora_format.from_file_tensors(with_alpha)
    assert all(torch.allclose(a[n][1], b[n][1]) for n in a)


@pytest.mark.parametrize(
    "key, message",
    [
        ("text_embedding_projection.aggregate_embed.lora_A.weight", "connectors"),
        ("transformer.transformer_blocks.0.attn1.to_q.lora_A.weight", "prefix"),
        ("diffusion_model.transformer_blocks.0.attn1.to_q.lora_down.weight", "suffix"),
        ("diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight", "both"),
    ],
)
def test_refusals_name_the_key(key, message, tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({key: torch.zeros(2, 4)}, str(path))
    with pytest.raises(lora_format.Ltx2LoraFormatError, match=message):
        lora_format.load(path)


def test_apply_refuses_modules_the_transformer_lacks(folder):
    from diffusers import LTX2VideoTransformer3DModel

    fresh = LTX2VideoTransformer3DModel.from_pretrained(str(folder / "transformer"))
    with pytest.raises(lora_format.Ltx2LoraFormatError, match="lacks"):
        lora_format.apply_to_transformer(fresh, {"blocks.0.self_attn.q": (torch.zeros(2, 4), torch.zeros(4, 2))})
