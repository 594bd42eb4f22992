"""Scaled fp8 storage (models/fp8_scaled.py): the block maths against hand-computed values, the
error against plain e4m3, PEFT LoRA on top (training gradients, generation), the config rule."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from test_train_helpers import lora, make_dataset, write_config
from ufo_video.cli import main
from ufo_video.models.fp8_scaled import (FP8, ScaledFp8Linear, block_linears, dequantize_blockwise,
                                         enable_fp8_scaled_storage, quantize_blockwise, relative_error)


def _hand_weight() -> torch.Tensor:
    """2 x 128: two blocks of 64 per row, each a scale times e4m3-exact values."""
    w = torch.zeros(2, 128)
    w[0, :64] = 0.01 * torch.tensor([448.0, -224.0, 1.0, 0.5] * 16)  # absmax 4.48 -> scale 0.01
    # w[0, 64:] stays zero -> scale 1 (nothing to divide)
    w[1, :64] = 2.0 * torch.tensor([-448.0, 3.0] * 32)  # absmax 896 -> scale 2
    w[1, 64:] = 0.25 * torch.tensor([448.0, 96.0, -0.125, 0.0] * 16)  # absmax 112 -> scale 0.25
    return w


def test_hand_computed_scales_and_exact_round_trip() -> None:
    w = _hand_weight()
    q, scale = quantize_blockwise(w)
    assert q.dtype == FP8 and q.shape == (2, 128) and scale.shape == (2, 2)
    expected = torch.tensor([[4.48 / 448, 1.0], [896 / 448, 112 / 448]])
    assert torch.allclose(scale, expected, rtol=1e-6, atol=0)
    assert q[0, :4].float().tolist() == pytest.approx([448.0, -224.0, 1.0, 0.5], rel=1e-2)  # 0.01 is not exact in fp32
    assert q[1, :2].float().tolist() == [-448.0, 3.0]
    assert q[1, 64:68].float().tolist() == [448.0, 96.0, -0.125, 0.0]
    back = dequantize_blockwise(q, scale, torch.float32)
    assert torch.allclose(back, w, rtol=1e-6, atol=1e-7)  # every value was scale x an e4m3 number


def test_round_trip_error_bound_and_better_than_plain_e4m3() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(256, 512, generator=g) * 0.02  # trained-like magnitude
    w[:, ::97] *= 40  # a few outliers per row, as trained weights have
    q, scale = quantize_blockwise(w)
    back = dequantize_blockwise(q, scale, torch.float32)
    step = scale.repeat_interleave(64, dim=1)
    # e4m3: 3 mantissa bits -> half an ulp is 2^-4 relative; subnormals (below 2^-6) step by 2^-9
    assert ((back - w).abs() <= w.abs() * 2**-4 + step * 2**-10 + 1e-12).all()
    plain = w.to(FP8).float()
    scaled_err, plain_err = relative_error(back, w), relative_error(plain, w)
    assert scaled_err < 0.04 and scaled_err < plain_err / 2, (scaled_err, plain_err)


def test_row_not_divisible_by_64_gets_one_scale_per_row() -> None:
    w = torch.tensor([[1.0, -2.0, 4.0], [0.0, 0.0, 0.0]])
    q, scale = quantize_blockwise(w)
    assert scale.shape == (2, 1) and scale[0, 0] == pytest.approx(4 / 448) and scale[1, 0] == 1.0
    assert torch.allclose(dequantize_blockwise(q, scale, torch.float32), w, rtol=2**-4)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj_in = nn.Linear(64, 128)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(128, 128), nn.GELU(), nn.Linear(128, 128))
                                    for _ in range(2))
        self.proj_out = nn.Linear(128, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj_in(x)
        for b in self.blocks:
            x = x + b(x)
        return self.proj_out(x)


def test_only_block_linears_are_converted_and_forward_dequantises() -> None:
    torch.manual_seed(0)
    model = _Tiny()
    x = torch.randn(4, 64)
    ref = model(x).detach()
    changed, n = enable_fp8_scaled_storage(model, torch.float32)
    assert (changed, n) == (False, 4)
    assert type(model.proj_in) is nn.Linear and type(model.proj_out) is nn.Linear
    layer = model.blocks[0][0]
    assert isinstance(layer, ScaledFp8Linear) and layer.weight.dtype == FP8 and not layer.weight.requires_grad
    assert layer.weight_scale.shape == (128, 2)
    manual = torch.nn.functional.linear(x.new_ones(1, 128), layer.dequantized_weight(), layer.bias)
    assert torch.equal(layer(x.new_ones(1, 128)), manual)
    assert 0 < relative_error(model(x), ref) < 0.05
    assert enable_fp8_scaled_storage(model, torch.float32) == (False, 0)  # once


@pytest.mark.parametrize("order", ["fp8_then_lora", "lora_then_fp8"])
def test_peft_lora_on_top_gets_gradients(order: str) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(0)
    model = _Tiny().requires_grad_(False)
    cfg = LoraConfig(r=4, lora_alpha=4, target_modules=r".*blocks\.\d+\.(0|2)", init_lora_weights=False)
    if order == "fp8_then_lora":  # training: the LoRA comes after the conversion
        enable_fp8_scaled_storage(model, torch.bfloat16)
        inject_adapter_in_model(cfg, model)
    else:  # generation: the LoRA is attached first, the PEFT layer's base_layer is replaced
        inject_adapter_in_model(cfg, model)
        enable_fp8_scaled_storage(model, torch.bfloat16)
    peft_layer = model.blocks[0][0]
    assert isinstance(peft_layer.base_layer, ScaledFp8Linear)
    assert all(type(m) is nn.Linear for n, m in model.named_modules() if "lora_" in n and isinstance(m, nn.Linear))
    lora_params = [p for n, p in model.named_parameters() if "lora_" in n]
    assert lora_params and all(p.dtype != FP8 for p in lora_params)
    for p in lora_params:
        p.data = p.data.float()
        p.requires_grad_(True)
    loss = model(torch.randn(3, 64)).float().pow(2).mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_params)
    assert peft_layer.base_layer.weight.grad is None


def test_fp8_scaled_needs_fp8_base(tiny_model: Path, tmp_path: Path, capsys) -> None:
    ds = make_dataset(tmp_path / "ds")
    cfg = write_config(tmp_path / "c.toml", tiny_model, ds, tmp_path / "out")
    assert main(["train", str(cfg), "fp8_scaled=true"]) == 2
    err = capsys.readouterr().err
    assert "fp8_scaled=true needs fp8_base=true" in err and "Traceback" not in err


def test_training_step_with_fp8_scaled_changes_the_lora(tiny_model: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from ufo_video.models import fp8_scaled

    converted: list[int] = []
    real = fp8_scaled.enable_fp8_scaled_storage

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        converted.append(out[1])
        return out

    monkeypatch.setattr(fp8_scaled, "enable_fp8_scaled_storage", spy)
    ds = make_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", tiny_model, ds, out, max_train_steps=2, checkpointing_steps=2,
                       save_state=False, mixed_precision="bf16")  # fmt: skip
    assert main(["train", str(cfg), "fp8_base=true", "fp8_scaled=true", "model.weight_dtype=bf16"]) == 0
    assert converted and converted[0] > 0  # the trained transformer's block Linears were stored scaled
    assert "base fp8_scaled" in capsys.readouterr().out  # the start summary's memory estimate
    weights = lora(out / "checkpoint-2.safetensors")
    ups = [v for k, v in weights.items() if k.endswith("lora_up.weight")]
    assert ups and any(float(v.abs().max()) > 0 for v in ups), "the LoRA did not train"  # lora_up starts at zero
    assert all(torch.isfinite(v.float()).all() for v in weights.values())


def test_generate_with_fp8_scaled_mode(tiny_model: Path, tmp_path: Path) -> None:
    from test_infer_lora import REQ, settings_for
    from test_lora_support import random_lora_file
    from ufo_video.infer.engine import VideoGenerator
    from ufo_video.infer.settings import LoraSpec

    path = random_lora_file(tiny_model, tmp_path / "l.safetensors", scale=0.5)
    base = replace(settings_for(tiny_model, [LoraSpec(str(path), 0.5)]), weight_dtype="bf16")
    logs: list[str] = []
    gen = VideoGenerator(replace(base, memory_mode="model_cpu_offload_and_fp8_scaled"), log=logs.append)
    assert any("fp8 weight storage applied" in m for m in logs), logs
    blocks = [m for m in gen.model.transformer.modules() if isinstance(m, ScaledFp8Linear)]
    assert blocks and len(list(block_linears(gen.model.transformer))) == 0  # every block Linear converted
    video = gen.generate_float(REQ)
    assert torch.isfinite(video).all()
    gen.set_lora_weights([0.0])
    assert not torch.equal(video, gen.generate_float(REQ))  # the LoRA runs on top of the scaled base


def test_bench_block_error_scaled_below_plain_at_small_width() -> None:
    from ufo_video.bench.cases_quant import fp8_errors

    e = fp8_errors(dim=256, heads=4, ffn=688, tokens=32)
    assert 0 < e["scaled_output"] < e["plain_output"] < 0.2
    assert 0 < e["scaled_weight"] < e["plain_weight"]
    assert e["scaled_weight"] < 0.03  # e4m3's floor: half an ulp is 2^-4, about 2.3 % on average
