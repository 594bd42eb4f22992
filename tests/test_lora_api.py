"""LoRA core: injection, formats, application, fusing — through the public API on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from conftest import REAL_12B_CONFIGS
from test_lora_support import forward, load_tiny, random_lora_file, weights_from
from ufo_video.config import LoraSection
from ufo_video.errors import LoraError
from ufo_video.lora.apply import fuse_loras, load_loras, remove_loras, set_lora_weights, unfuse_loras
from ufo_video.lora.formats import (
    LoraModule,
    LoraWeights,
    read_lora,
    to_kohya,
    to_peft,
    write_lora,
)
from ufo_video.lora.inject import add_lora, lora_param_count, resolve_targets
from ufo_video.models.easyanimate import EasyAnimateAdapter


@pytest.fixture(scope="module")
def lora_a(tiny_models, tmp_path_factory) -> Path:
    return random_lora_file(tiny_models["diffusers"], tmp_path_factory.mktemp("la") / "a.safetensors", seed=1)


@pytest.fixture(scope="module")
def lora_b(tiny_models, tmp_path_factory) -> Path:
    return random_lora_file(
        tiny_models["diffusers"], tmp_path_factory.mktemp("lb") / "b.safetensors", rank=2, alpha=8.0, targets="attention", seed=2
    )


# ---- injection ---------------------------------------------------------------------------------
def test_all_linear_wraps_every_linear_and_output_is_unchanged(tiny_model: Path) -> None:
    model = load_tiny(tiny_model)
    base_out = forward(model)
    linears = {n for n, m in model.transformer.named_modules() if isinstance(m, nn.Linear)}
    summary = add_lora(model, LoraSection(rank=4, network_alpha=2.0))
    assert set(summary.target_modules) == linears and len(linears) == 33
    assert "proj" not in summary.target_modules  # the 2x2 patch-embed Conv2d is left out (as in the reference)
    trainable = {n for n, p in model.transformer.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A.ufo." in n or ".lora_B.ufo." in n for n in trainable)
    assert summary.trainable == sum(p.numel() for p in model.transformer.parameters() if p.requires_grad)
    assert summary.trainable == lora_param_count(model.transformer, summary.target_modules, 4)
    assert summary.base == 61_040 and summary.ratio == pytest.approx(summary.trainable / 61_040)
    assert torch.equal(forward(model), base_out)  # lora_B starts at zero


def test_explicit_targets_accept_original_names_and_report_unmatched(tiny_model: Path) -> None:
    model = load_tiny(tiny_model)
    got = resolve_targets(EasyAnimateAdapter, model.transformer, ["attn2.to_q", "txt_ff.net.0.proj", "proj"])
    assert got == sorted(
        [f"transformer_blocks.{i}.attn1.add_q_proj" for i in (0, 1)]
        + [f"transformer_blocks.{i}.txt_ff.net.0.proj" for i in (0, 1)]
        + ["proj"]
    )
    with pytest.raises(LoraError, match="to_qq.*no_such_module|no_such_module.*to_qq"):
        add_lora(model, LoraSection(target_modules=["to_q", "to_qq", "no_such_module"]))
    with pytest.raises(LoraError, match="cannot wrap.*norm1"):
        add_lora(model, LoraSection(target_modules=["norm1"]))
    with pytest.raises(LoraError, match="unknown preset"):
        add_lora(model, LoraSection(target_modules="everything"))


def test_real_12b_rank128_all_linear_parameter_count() -> None:
    """The real figure behind the README's '0.005x of the model size' claim (meta device)."""
    transformer = EasyAnimateAdapter.build_meta(REAL_12B_CONFIGS)["transformer"]
    targets = resolve_targets(EasyAnimateAdapter, transformer, "all-linear")
    base = sum(p.numel() for p in transformer.parameters())
    count = lora_param_count(transformer, targets, 128)
    print(f"12B all-linear rank 128: {len(targets)} modules, {count:,} params = {count / base:.4f} x {base:,}")
    assert len(targets) == 48 * 14 + 5
    assert base == 11_799_265_856
    assert count == 914_956_288  # 7.75 % of the transformer, not 0.5 %
    # PEFT itself, injecting on the meta device, agrees with the count from shapes
    from accelerate import init_empty_weights

    from ufo_video.models.info import ModelInfo

    model = EasyAnimateAdapter(ModelInfo("easyanimate", REAL_12B_CONFIGS, "diffusers", "inp", 16), {"transformer": transformer})
    with init_empty_weights(include_buffers=False):
        summary = add_lora(model, LoraSection(rank=128, network_alpha=64.0))
    assert summary.trainable == count and summary.base == base and len(summary.target_modules) == 677


# ---- scaling maths -------------------------------------------------------------------------------
def test_scaling_maths_on_a_single_linear(tmp_path: Path) -> None:
    """W x + b + weight * (alpha / r) * up(down(x)), by hand, through a file and load_loras."""
    from diffusers.loaders.peft import PeftAdapterMixin

    class OneLinear(nn.Module, PeftAdapterMixin):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

    class OneLinearModel(EasyAnimateAdapter):  # EasyAnimate's naming hooks, a one-Linear "transformer"
        def __init__(self, transformer):
            self.transformer = transformer

    torch.manual_seed(0)
    model = OneLinearModel(OneLinear())
    down = torch.tensor([[1.0, 0.0, 2.0], [0.0, -1.0, 1.0]])  # r = 2
    up = torch.tensor([[0.5, 1.0], [2.0, -1.0]])
    x = torch.tensor([[1.0, 2.0, 3.0]])
    lin = model.transformer.lin
    base = x @ lin.weight.T + lin.bias
    # down x = [7, 1]; up (down x) = [4.5, 13]; alpha 3 / r 2 = 1.5; weight 0.2 -> factor 0.3
    expected = base + torch.tensor([[4.5 * 0.3, 13.0 * 0.3]])
    path = write_lora(tmp_path / "one.safetensors", weights_from({"lin": (down, up, 3.0)}))
    load_loras(model, [(path, 0.2)])
    with torch.no_grad():
        got = model.transformer.lin(x)
    assert torch.allclose(got, expected, atol=1e-6), (got, expected)


# ---- application ---------------------------------------------------------------------------------
def test_weight_zero_is_bitwise_base_and_weights_change_without_reload(tiny_model: Path, lora_a: Path) -> None:
    model = load_tiny(tiny_model)
    base_out = forward(model)
    (name,) = load_loras(model, [(lora_a, 0.0)])
    assert torch.equal(forward(model), base_out)
    set_lora_weights(model, {name: 0.5})
    half = forward(model)
    assert not torch.allclose(half, base_out, atol=1e-4)
    set_lora_weights(model, {name: 0.0})
    assert torch.equal(forward(model), base_out)
    with pytest.raises(LoraError, match="unknown LoRA adapter"):
        set_lora_weights(model, {"nope": 1.0})
    remove_loras(model)
    assert not any("lora_" in n for n, _ in model.transformer.named_parameters())
    assert torch.equal(forward(model), base_out)


def test_weight_zero_is_bitwise_base_in_bf16(tiny_model: Path, lora_a: Path) -> None:
    model = load_tiny(tiny_model, dtype=torch.bfloat16)
    base_out = forward(model)
    load_loras(model, [(lora_a, 0.0)])
    assert torch.equal(forward(model), base_out)


def test_two_loras_equal_their_rank_concatenation(tiny_model: Path, lora_a: Path, lora_b: Path, tmp_path: Path) -> None:
    model = load_tiny(tiny_model)
    wa, wb = 0.5, 1.5
    load_loras(model, [(lora_a, wa), (lora_b, wb)])
    both = forward(model)
    remove_loras(model)
    a, b = read_lora(lora_a), read_lora(lora_b)
    combined = {}
    for name in set(a.modules) | set(b.modules):
        parts = [(m, w) for m, w in ((a.modules.get(name), wa), (b.modules.get(name), wb)) if m is not None]
        down = torch.cat([m.down for m, _ in parts])
        up = torch.cat([w * m.scale * m.up for m, w in parts], dim=1)
        combined[name] = (down, up, float(down.shape[0]))
    path = write_lora(tmp_path / "ab.safetensors", weights_from(combined))
    load_loras(model, [(path, 1.0)])
    assert torch.allclose(forward(model), both, atol=1e-5)


def test_fused_equals_unfused_and_unfuse_is_exact(tiny_model: Path, lora_a: Path, lora_b: Path) -> None:
    model = load_tiny(tiny_model)
    state_before = {k: v.clone() for k, v in model.transformer.state_dict().items()}
    load_loras(model, [(lora_a, 0.7), (lora_b, 0.3)])
    unfused = forward(model)
    fuse_loras(model)
    assert torch.allclose(forward(model), unfused, atol=1e-5)
    unfuse_loras(model)
    assert torch.equal(forward(model), unfused)
    remove_loras(model)
    for k, v in model.transformer.state_dict().items():
        assert torch.equal(v, state_before[k]), k


def test_fuse_in_bf16_keeps_a_small_weight_and_restores_exactly(tiny_model: Path, lora_a: Path) -> None:
    model = load_tiny(tiny_model, dtype=torch.bfloat16)
    layer = model.transformer.transformer_blocks[0].attn1.to_q
    original = layer.weight.detach().clone()
    load_loras(model, [(lora_a, 0.05)], fuse=True)
    fused = model.transformer.transformer_blocks[0].attn1.to_q.get_base_layer().weight.detach().clone()
    mod = read_lora(lora_a).modules["transformer_blocks_0_attn1_to_q"]
    expected = (original.float() + 0.05 * mod.delta()).to(torch.bfloat16)  # one rounding
    assert torch.equal(fused, expected) and not torch.equal(fused, original)
    remove_loras(model)
    assert torch.equal(model.transformer.transformer_blocks[0].attn1.to_q.weight, original)


def test_lora_from_another_model_of_the_same_specification(tiny_models, tmp_path: Path) -> None:
    """A LoRA saved on one model applies to another with the same names and shapes (other weights)."""
    from ufo_video.models.easyanimate.tiny import make_tiny

    other = make_tiny(tmp_path / "other", seed=5)
    path = random_lora_file(tiny_models["diffusers"], tmp_path / "l.safetensors")
    model = load_tiny(other)
    base_out = forward(model)
    load_loras(model, [(path, 1.0)])
    assert not torch.allclose(forward(model), base_out, atol=1e-4)


def test_original_layout_model_takes_the_same_lora(tiny_models, lora_a: Path) -> None:
    outs = []
    for layout in ("diffusers", "original"):
        model = load_tiny(tiny_models[layout])
        load_loras(model, [(lora_a, 0.8)])
        outs.append(forward(model))
    assert torch.equal(outs[0], outs[1])


# ---- formats -------------------------------------------------------------------------------------
def test_saved_kohya_keys_use_original_names_and_metadata(lora_a: Path) -> None:
    from safetensors import safe_open

    keys = set(load_file(str(lora_a)))
    assert "lora_unet__transformer_blocks_0_attn2_to_q.lora_down.weight" in keys
    assert "lora_unet__transformer_blocks_1_attn2_to_out_0.lora_up.weight" in keys
    assert "lora_unet__transformer_blocks_0_txt_ff_net_0_proj.alpha" in keys
    assert "lora_unet__norm_out_linear.lora_down.weight" in keys
    assert not any("add_q_proj" in k or "to_add_out" in k for k in keys)
    with safe_open(str(lora_a), "pt") as fh:
        meta = fh.metadata()
    assert meta["note"] == "test" and meta["ufo_format"] == "kohya" and meta["ufo_rank"] == "4"
    assert meta["ufo_alpha"] == "2" and "ufo_base_model" in meta and json.loads(meta["ufo_targets"])["transformer_blocks_*_attn2_to_q"] == 2


def test_kohya_names_resolve_through_real_modules(tiny_model: Path, lora_a: Path) -> None:
    model = load_tiny(tiny_model)
    resolved = read_lora(lora_a).resolve(model, model.transformer)
    for path in (
        "transformer_blocks.0.attn1.add_q_proj",  # attn2.to_q
        "transformer_blocks.1.attn1.to_add_out",  # attn2.to_out.0
        "transformer_blocks.0.txt_ff.net.0.proj",
        "norm_out.linear",
        "text_proj.1",
        "proj_out",
    ):
        assert path in resolved
    assert len(resolved) == 33


def test_kohya_and_peft_files_give_the_same_output_and_round_trip_bit_exact(
    tiny_model: Path, lora_a: Path, tmp_path: Path
) -> None:
    model = load_tiny(tiny_model)
    kohya = read_lora(lora_a)
    peft_file = write_lora(tmp_path / "p.safetensors", to_peft(kohya, model, model.transformer))
    peft = read_lora(peft_file)
    assert peft.format == "peft" and "transformer.transformer_blocks.0.attn1.add_q_proj.lora_A.weight" in load_file(str(peft_file))
    back = read_lora(write_lora(tmp_path / "k.safetensors", to_kohya(peft, model)))
    assert back.modules.keys() == kohya.modules.keys()
    for name, m in kohya.modules.items():
        b = back.modules[name]
        assert torch.equal(b.down, m.down) and torch.equal(b.up, m.up) and b.alpha == m.alpha
        assert b.down.dtype == m.down.dtype
    assert load_file(str(lora_a)).keys() == load_file(str(tmp_path / "k.safetensors")).keys()
    outs = []
    for f in (lora_a, peft_file):
        m2 = load_tiny(tiny_model)
        load_loras(m2, [(f, 0.6)])
        outs.append(forward(m2))
    assert torch.equal(outs[0], outs[1])


def test_peft_alpha_defaults_to_rank_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "bare.safetensors"
    save_file({"transformer.proj_out.lora_A.weight": torch.ones(3, 32), "transformer.proj_out.lora_B.weight": torch.ones(16, 3)}, str(path))
    lora = read_lora(path)
    assert lora.format == "peft" and lora.modules["proj_out"].alpha == 3.0


def test_pickle_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    for name in ("evil.pt", "evil.safetensors"):
        torch.save({"x": Evil()}, tmp_path / name)
        with pytest.raises(LoraError, match="pickle"):
            read_lora(tmp_path / name)
    assert not marker.exists()


def test_truncated_and_unknown_and_mixed_files(lora_a: Path, tmp_path: Path) -> None:
    data = lora_a.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(LoraError, match="truncated or corrupt"):
        read_lora(tmp_path / "cut.safetensors")
    save_file({"model.diffusion_model.x.weight": torch.ones(2)}, str(tmp_path / "unk.safetensors"))
    with pytest.raises(LoraError, match="unknown layout.*model.diffusion_model.x.weight"):
        read_lora(tmp_path / "unk.safetensors")
    mixed = {
        "lora_unet__proj_out.lora_down.weight": torch.ones(2, 32),
        "lora_unet__proj_out.lora_up.weight": torch.ones(16, 2),
        "transformer.norm_out.linear.lora_A.weight": torch.ones(2, 8),
        "transformer.norm_out.linear.lora_B.weight": torch.ones(64, 2),
    }
    save_file(mixed, str(tmp_path / "mixed.safetensors"))
    with pytest.raises(LoraError, match="mixes key layouts: kohya"):
        read_lora(tmp_path / "mixed.safetensors")
    save_file({"lora_unet__proj_out.lora_down.weight": torch.ones(2, 32)}, str(tmp_path / "half.safetensors"))
    with pytest.raises(LoraError, match="missing down/up.*proj_out"):
        read_lora(tmp_path / "half.safetensors")
    with pytest.raises(LoraError, match="not found"):
        read_lora(tmp_path / "absent.safetensors")


def test_unmatched_keys_and_shape_mismatches_are_listed(tiny_model: Path, tmp_path: Path) -> None:
    model = load_tiny(tiny_model)
    bad = {
        "transformer_blocks_0_attn2_to_q": (torch.ones(2, 32), torch.ones(32, 2), 2.0),
        "transformer_blocks_7_attn1_to_q": (torch.ones(2, 32), torch.ones(32, 2), 2.0),
        "txt_ff_net_0_projection": (torch.ones(2, 32), torch.ones(32, 2), 2.0),
        "proj_out": (torch.ones(2, 99), torch.ones(16, 2), 2.0),
    }
    path = write_lora(tmp_path / "bad.safetensors", weights_from(bad))
    lora = read_lora(path)
    with pytest.raises(LoraError) as err:
        lora.resolve(model, model.transformer)
    msg = str(err.value)
    assert "transformer_blocks_7_attn1_to_q" in msg and "txt_ff_net_0_projection" in msg
    assert "shape mismatches (1): proj_out" in msg and "transformer_blocks_0_attn2_to_q" not in msg
    base_out = forward(model)
    with pytest.raises(LoraError):
        load_loras(model, [(path, 1.0)])
    assert not hasattr(model.transformer, "peft_config") or not model.transformer.peft_config
    assert torch.equal(forward(model), base_out)


def test_diffusers_spelling_in_kohya_keys_is_accepted_but_not_twice(tiny_model: Path, tmp_path: Path) -> None:
    model = load_tiny(tiny_model)
    one = {"transformer_blocks_0_attn1_add_q_proj": (torch.ones(2, 32), torch.ones(32, 2), 2.0)}
    lora = read_lora(write_lora(tmp_path / "d.safetensors", weights_from(one)))
    assert list(lora.resolve(model, model.transformer)) == ["transformer_blocks.0.attn1.add_q_proj"]
    two = dict(one, transformer_blocks_0_attn2_to_q=(torch.ones(2, 32), torch.ones(32, 2), 2.0))
    lora = read_lora(write_lora(tmp_path / "dd.safetensors", weights_from(two)))
    with pytest.raises(LoraError, match="named twice"):
        lora.resolve(model, model.transformer)


def test_save_lora_dtype_and_atomic_write(tiny_model: Path, tmp_path: Path) -> None:
    path = random_lora_file(tiny_model, tmp_path / "x.safetensors")
    assert read_lora(path).dtypes == {"float32"}
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]  # no temporary file left behind
    with pytest.raises(LoraError, match="safetensors"):
        write_lora(tmp_path / "x.pt", read_lora(path))


def test_conv2d_lora_on_patch_embed(tiny_model: Path, tmp_path: Path) -> None:
    model = load_tiny(tiny_model)
    base_out = forward(model)
    mods = {"proj": (torch.randn(2, 9, 2, 2) * 0.1, torch.randn(32, 2, 1, 1) * 0.1, 2.0)}
    path = write_lora(tmp_path / "c.safetensors", weights_from(mods))
    load_loras(model, [(path, 1.0)])
    unfused = forward(model)
    assert not torch.allclose(unfused, base_out, atol=1e-5)
    fuse_loras(model)
    assert torch.allclose(forward(model), unfused, atol=1e-5)


def test_lora_weights_facts() -> None:
    w = LoraWeights("kohya", {"a": LoraModule(torch.ones(4, 3), torch.ones(5, 4), 2.0)})
    assert w.num_params == 32 and w.ranks == {4: 1} and w.modules["a"].scale == 0.5
    assert torch.equal(w.modules["a"].delta(), torch.full((5, 3), 2.0))


def test_reads_diffusers_save_lora_adapter_output(tiny_model: Path, tmp_path: Path) -> None:
    """A file written by diffusers' own `save_lora_adapter` (unprefixed keys, alpha in metadata)."""
    model = load_tiny(tiny_model)
    add_lora(model, LoraSection(rank=4, network_alpha=2.0, target_modules="attention"), "mine")
    with torch.no_grad():
        for name, p in model.transformer.named_parameters():
            if ".mine." in name:
                p.normal_(0, 0.3)
    expected = forward(model)
    model.transformer.save_lora_adapter(str(tmp_path), adapter_name="mine")
    lora = read_lora(tmp_path / "pytorch_lora_weights.safetensors")
    assert lora.format == "peft" and set(lora.alphas) == {2.0} and len(lora.modules) == 16
    fresh = load_tiny(tiny_model)
    load_loras(fresh, [(tmp_path / "pytorch_lora_weights.safetensors", 1.0)])
    assert torch.allclose(forward(fresh), expected, atol=1e-6)


def test_single_underscore_kohya_prefix_and_missing_alpha(tiny_model: Path, tmp_path: Path) -> None:
    path = tmp_path / "k1.safetensors"
    save_file(
        {"lora_unet_transformer_blocks_1_attn2_to_out_0.lora_down.weight": torch.ones(2, 32),
         "lora_unet_transformer_blocks_1_attn2_to_out_0.lora_up.weight": torch.ones(32, 2)},
        str(path),
    )  # fmt: skip
    lora = read_lora(path)
    model = load_tiny(tiny_model)
    resolved = lora.resolve(model, model.transformer)
    assert list(resolved) == ["transformer_blocks.1.attn1.to_add_out"] and resolved["transformer_blocks.1.attn1.to_add_out"][2] == 2.0


def test_a_module_without_an_original_name_is_refused_in_original_name_formats():
    """kohya / musubi / comfy files name modules in the family's original naming; a module that
    naming does not know (its name does not map back) would be written under a name no loader of
    that format applies: refused by name, while PEFT (our own names) still works."""
    import torch

    from ufo_video.errors import LoraError, ModelLoadError
    from ufo_video.lora.formats import LoraModule, LoraWeights, convert

    class Family:  # the LoRA hooks of `ModelAdapter` that `convert` asks, with their defaults
        @staticmethod
        def lora_format_aliases():
            return {}

        @staticmethod
        def lora_file_formats():
            return {}

        @staticmethod
        def to_original_module_name(name):
            return "orig." + name if name.startswith("known") else name

        @staticmethod
        def from_original_module_name(name):
            if not name.startswith("orig."):
                raise ModelLoadError(f"unknown original name {name}")
            return name.removeprefix("orig.")

    mod = LoraModule(torch.zeros(1, 2), torch.zeros(2, 1), 1.0)
    weights = LoraWeights("peft", {"known.q": mod, "extra.proj": mod})
    with pytest.raises(LoraError, match="module 'extra.proj' has no name in the family's original naming"):
        convert(weights, "comfy", Family)
    ok = convert(LoraWeights("peft", {"known.q": mod}), "musubi", Family)
    assert list(ok.modules) == ["orig_known_q"]
