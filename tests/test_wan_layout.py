"""Wan original <-> diffusers transformer names (ufo_video.models.wan.layout).

Oracles: hand-written pairs taken from Wan's original module names / diffusers' converter,
strict `load_state_dict` into diffusers' own `WanTransformer3DModel`, and diffusers' own
single-file loader (`from_single_file`), which renames Wan's original names itself.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel

from ufo_video.errors import ModelLoadError
from ufo_video.models.wan import layout as wl
from ufo_video.models.wan.tiny import tiny_transformer_config

# Every transformer structure: 2.1 T2V / 2.2 A14B T2V, 2.1 I2V (image stream), 2.2 I2V A14B
# (36 channels, no image stream), 2.2 TI2V-5B (48 channels), FLF2V (image position embedding).
STRUCTURES = {
    "t2v": tiny_transformer_config("t2v"),
    "i2v": tiny_transformer_config("i2v"),
    "a14b-i2v": tiny_transformer_config("a14b-i2v"),
    "ti2v": tiny_transformer_config("ti2v"),
    "flf2v": tiny_transformer_config("i2v", pos_embed_seq_len=2 * 5),
}

# (diffusers, original) — original names as in Wan's repository (WanModel / WanAttentionBlock)
# and diffusers' scripts/convert_wan_to_diffusers.py.
EXPECTED_KEYS = [
    ("patch_embedding.weight", "patch_embedding.weight"),
    ("patch_embedding.bias", "patch_embedding.bias"),
    ("condition_embedder.text_embedder.linear_1.weight", "text_embedding.0.weight"),
    ("condition_embedder.text_embedder.linear_2.bias", "text_embedding.2.bias"),
    ("condition_embedder.time_embedder.linear_1.weight", "time_embedding.0.weight"),
    ("condition_embedder.time_embedder.linear_2.bias", "time_embedding.2.bias"),
    ("condition_embedder.time_proj.weight", "time_projection.1.weight"),
    ("condition_embedder.image_embedder.norm1.weight", "img_emb.proj.0.weight"),
    ("condition_embedder.image_embedder.ff.net.0.proj.weight", "img_emb.proj.1.weight"),
    ("condition_embedder.image_embedder.ff.net.2.bias", "img_emb.proj.3.bias"),
    ("condition_embedder.image_embedder.norm2.bias", "img_emb.proj.4.bias"),
    ("condition_embedder.image_embedder.pos_embed", "img_emb.emb_pos"),
    ("proj_out.weight", "head.head.weight"),
    ("proj_out.bias", "head.head.bias"),
    ("scale_shift_table", "head.modulation"),
    ("blocks.0.scale_shift_table", "blocks.0.modulation"),
    ("blocks.0.attn1.to_q.weight", "blocks.0.self_attn.q.weight"),
    ("blocks.0.attn1.to_k.bias", "blocks.0.self_attn.k.bias"),
    ("blocks.0.attn1.to_v.weight", "blocks.0.self_attn.v.weight"),
    ("blocks.0.attn1.to_out.0.weight", "blocks.0.self_attn.o.weight"),
    ("blocks.0.attn1.norm_q.weight", "blocks.0.self_attn.norm_q.weight"),
    ("blocks.1.attn1.norm_k.weight", "blocks.1.self_attn.norm_k.weight"),
    ("blocks.1.attn2.to_q.bias", "blocks.1.cross_attn.q.bias"),
    ("blocks.1.attn2.to_out.0.bias", "blocks.1.cross_attn.o.bias"),
    ("blocks.1.attn2.norm_k.weight", "blocks.1.cross_attn.norm_k.weight"),
    ("blocks.1.attn2.add_k_proj.weight", "blocks.1.cross_attn.k_img.weight"),
    ("blocks.1.attn2.add_v_proj.bias", "blocks.1.cross_attn.v_img.bias"),
    ("blocks.1.attn2.norm_added_k.weight", "blocks.1.cross_attn.norm_k_img.weight"),
    ("blocks.39.norm2.weight", "blocks.39.norm3.weight"),
    ("blocks.39.norm2.bias", "blocks.39.norm3.bias"),
    ("blocks.39.ffn.net.0.proj.weight", "blocks.39.ffn.0.weight"),
    ("blocks.39.ffn.net.2.bias", "blocks.39.ffn.2.bias"),
]

EXPECTED_MODULES = [
    ("blocks.0.attn1.to_q", "blocks.0.self_attn.q"),
    ("blocks.0.attn1.to_out.0", "blocks.0.self_attn.o"),
    ("blocks.3.attn2.to_v", "blocks.3.cross_attn.v"),
    ("blocks.0.attn2.add_k_proj", "blocks.0.cross_attn.k_img"),
    ("blocks.0.attn2.add_v_proj", "blocks.0.cross_attn.v_img"),
    ("blocks.0.ffn.net.0.proj", "blocks.0.ffn.0"),
    ("blocks.0.ffn.net.2", "blocks.0.ffn.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("proj_out", "head.head"),
    ("patch_embedding", "patch_embedding"),
]


def _model(structure: str) -> WanTransformer3DModel:
    torch.manual_seed(0)
    return WanTransformer3DModel(**STRUCTURES[structure])


@pytest.mark.parametrize("diffusers_key, original_key", EXPECTED_KEYS)
def test_key_pairs_follow_wan_and_diffusers_conventions(diffusers_key, original_key):
    assert wl.diffusers_to_original_key(diffusers_key) == original_key
    assert wl.original_to_diffusers_key(original_key) == diffusers_key
    for prefix in wl.ORIGINAL_PREFIXES:
        assert wl.original_to_diffusers_key(prefix + original_key) == diffusers_key


@pytest.mark.parametrize("diffusers_name, original_name", EXPECTED_MODULES)
def test_module_pairs_for_lora_keys(diffusers_name, original_name):
    assert wl.diffusers_to_original_module(diffusers_name) == original_name
    assert wl.original_to_diffusers_module(original_name) == diffusers_name
    assert wl.original_to_diffusers_module("diffusion_model." + original_name) == diffusers_name


@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_every_key_round_trips_and_loads_strictly(structure):
    model = _model(structure)
    state = model.state_dict()
    original = wl.diffusers_to_original_state_dict(state, prefix="model.diffusion_model.")
    assert len(original) == len(state)  # no two tensors share an original name
    for key in state:
        assert wl.original_to_diffusers_key(wl.diffusers_to_original_key(key)) == key
    back = wl.original_to_diffusers_state_dict(original)
    assert list(back) == list(state)

    fresh = WanTransformer3DModel(**STRUCTURES[structure])
    fresh.load_state_dict(back, strict=True)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("structure", ["t2v", "i2v"])
def test_every_parameterised_module_round_trips(structure):
    model = _model(structure)
    # Modules with their own `weight` (the root and blocks hold only bare `scale_shift_table`s).
    names = [n for n, m in model.named_modules() if "weight" in dict(m.named_parameters(recurse=False))]
    assert "blocks.1.attn2.to_out.0" in names and "proj_out" in names
    for name in names:
        assert wl.original_to_diffusers_module(wl.diffusers_to_original_module(name)) == name
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    originals = [wl.diffusers_to_original_module(n) for n in linears]
    assert len(set(originals)) == len(linears)
    if structure == "i2v":
        assert "blocks.1.cross_attn.k_img" in originals and "img_emb.proj.3" in originals


def test_diffusers_single_file_loader_reads_the_original_names(tmp_path):
    """diffusers' own `from_single_file` (its Wan converter) must load what our names produce."""
    from safetensors.torch import save_file

    model = _model("i2v")
    model.save_config(tmp_path / "transformer")
    state = wl.diffusers_to_original_state_dict(model.state_dict(), prefix="model.diffusion_model.")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    loaded = WanTransformer3DModel.from_single_file(
        str(tmp_path / "w.safetensors"), config=str(tmp_path), subfolder="transformer", local_files_only=True
    )
    reference = model.state_dict()
    assert set(loaded.state_dict()) == set(reference)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, reference[key]), key


@pytest.mark.parametrize(
    "func, key",
    [
        (wl.original_to_diffusers_key, "blocks.0.attn1.to_q.weight"),  # diffusers name given as original
        (wl.diffusers_to_original_key, "blocks.0.self_attn.q.weight"),  # and the reverse
        (wl.original_to_diffusers_key, "vace_blocks.0.after_proj.weight"),  # VACE: unsupported
        (wl.original_to_diffusers_key, "blocks.0.self_attn.q.lora_A.weight"),  # a LoRA key is not a tensor name
        (wl.diffusers_to_original_key, "blocks.0.attn1.norm_q.bias"),  # RMSNorm has no bias
        (wl.diffusers_to_original_key, "blocks.x.attn1.to_q.weight"),
        (wl.original_to_diffusers_key, "head.modulation.weight"),
        (wl.original_to_diffusers_key, "model.blocks.0.ffn.0.weight"),
        (wl.original_to_diffusers_module, "blocks.0.self_attn"),  # only parameterised modules
        (wl.diffusers_to_original_module, "transformer.blocks.0.attn1.to_q"),
    ],
)
def test_unknown_names_raise_naming_the_key(func, key):
    with pytest.raises(wl.UnknownWanKeyError) as info:
        func(key)
    assert repr(key) in str(info.value)
    assert info.value.key == key
    assert isinstance(info.value, ModelLoadError)


def test_state_dict_rename_refuses_duplicates_and_unknown_keys():
    weight = torch.zeros(1)
    with pytest.raises(ModelLoadError, match="appears twice"):
        wl.original_to_diffusers_state_dict({"head.head.weight": weight, "model.diffusion_model.head.head.weight": weight})
    with pytest.raises(wl.UnknownWanKeyError, match="extra.weight"):
        wl.original_to_diffusers_state_dict({"head.head.weight": weight, "extra.weight": weight})


def test_key_naming_detects_both_layouts_and_rejects_others():
    state = _model("t2v").state_dict()
    assert wl.key_naming(state) == "diffusers"
    assert wl.key_naming(wl.diffusers_to_original_state_dict(state)) == "original"
    assert wl.key_naming(wl.diffusers_to_original_state_dict(state, prefix="diffusion_model.")) == "original"
    mixed = list(wl.diffusers_to_original_state_dict(state)) + ["blocks.0.attn1.to_q.weight"]
    with pytest.raises(wl.UnknownWanKeyError, match="blocks.0.attn1.to_q.weight"):
        wl.key_naming(mixed)
    with pytest.raises(ModelLoadError, match="no tensors"):
        wl.key_naming([])


@pytest.mark.parametrize(
    "flat, original",
    [
        ("lora_unet_blocks_0_self_attn_q", "blocks.0.self_attn.q"),
        ("lora_unet_blocks_12_cross_attn_k_img", "blocks.12.cross_attn.k_img"),
        ("lora_unet_blocks_3_cross_attn_norm_k_img", "blocks.3.cross_attn.norm_k_img"),
        ("lora_unet_blocks_1_ffn_2", "blocks.1.ffn.2"),
        ("lora_unet_time_projection_1", "time_projection.1"),
        ("lora_unet_head_head", "head.head"),
        ("lora_unet_patch_embedding", "patch_embedding"),
    ],
)
def test_musubi_flat_names(flat, original):
    assert wl.flat_to_original_module(flat) == original
    assert wl.flat_to_original_module(flat.removeprefix("lora_unet_")) == original
    assert wl.original_module_to_flat(original) == flat
    assert wl.original_module_to_flat("diffusion_model." + original) == flat


def test_every_linear_has_a_musubi_name_that_round_trips():
    model = _model("i2v")
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            original = wl.diffusers_to_original_module(name)
            assert wl.original_to_diffusers_module(wl.flat_to_original_module(wl.original_module_to_flat(original))) == name


@pytest.mark.parametrize("flat", ["lora_unet_blocks_0_self_attn", "lora_unet_blocks_0_attn1_to_q", "lora_te_x", "blocks_a_ffn_0"])
def test_unknown_musubi_names_raise(flat):
    with pytest.raises(wl.UnknownWanKeyError, match=repr(flat).replace("[", r"\[")):
        wl.flat_to_original_module(flat)
