"""LoRA precision at application: a bf16 file on an fp32 model keeps an fp32 branch; fusing never
bakes a small delta into fp8 weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from test_infer_lora import REQ, settings_for
from test_lora_support import random_lora_file
from ufo_video.errors import LoraError
from ufo_video.infer.settings import LoraSpec
from ufo_video.lora.apply import fuse_loras, load_loras
from ufo_video.lora.formats import read_lora, write_lora
from ufo_video.models.memory import enable_fp8_storage
from ufo_video.models.registry import load_model


@pytest.fixture(scope="module")
def bf16_lora(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bf16-lora")
    fp32 = random_lora_file(tiny_models["diffusers"], root / "fp32.safetensors", scale=0.5)
    return write_lora(root / "bf16.safetensors", read_lora(fp32), dtype=torch.bfloat16)


def test_bf16_file_on_fp32_model_runs_an_fp32_branch(tiny_model: Path, bf16_lora: Path) -> None:
    model = load_model(tiny_model, dtype=torch.float32, components=("transformer",))
    name = load_loras(model, [(bf16_lora, 0.1)])[0]
    layer = model.transformer.transformer_blocks[0].attn1.to_q
    a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
    assert a.dtype == b.dtype == torch.float32
    stored = read_lora(bf16_lora)
    assert all(m.down.dtype == torch.bfloat16 for m in stored.modules.values())
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(0))
    scale = layer.scaling[name]  # PEFT folds the adapter weight (0.1) into its scaling
    with torch.no_grad():
        got = layer(x) - layer.get_base_layer()(x)
        exact = (x.double() @ a.double().T @ b.double().T * scale).float()
        in_bf16 = (x.bfloat16() @ a.bfloat16().T @ b.bfloat16().T).float() * scale  # the former branch
    err, former = (got - exact).abs().max(), (in_bf16 - exact).abs().max()
    assert former > 50 * err, (former, err)  # the check could tell the two apart
    assert err <= 1e-6 * exact.abs().max()


def test_fp32_file_on_bf16_model_keeps_fp32(tiny_model: Path, tmp_path: Path) -> None:
    path = random_lora_file(tiny_model, tmp_path / "l.safetensors")
    model = load_model(tiny_model, dtype=torch.bfloat16, components=("transformer",))
    name = load_loras(model, [(path, 0.1)])[0]
    assert model.transformer.transformer_blocks[0].attn1.to_q.lora_A[name].weight.dtype == torch.float32


def test_fusing_into_fp8_weights_is_refused(tiny_model: Path, bf16_lora: Path) -> None:
    model = load_model(tiny_model, dtype=torch.bfloat16, components=("transformer",))
    load_loras(model, [(bf16_lora, 0.1)])
    enable_fp8_storage(model.transformer, torch.bfloat16)
    with pytest.raises(LoraError, match=r"fp8.*Drop --fuse"):
        fuse_loras(model)


def test_fuse_with_qfloat8_keeps_the_lora_unfused_on_the_fp8_base(tiny_model: Path, bf16_lora: Path) -> None:
    from ufo_video.infer.engine import VideoGenerator

    base = replace(settings_for(tiny_model, [LoraSpec(str(bf16_lora), 0.05)]),
                   memory_mode="model_cpu_offload_and_qfloat8", weight_dtype="bf16")  # fmt: skip
    logs: list[str] = []
    fused = VideoGenerator(replace(base, fuse=True), log=logs.append)
    assert any("run unfused on top of the fp8 weights" in m for m in logs), logs
    out_fused = fused.generate_float(REQ)
    unfused = VideoGenerator(base, log=lambda _: None)
    out_unfused = unfused.generate_float(REQ)
    assert torch.equal(out_fused, out_unfused)
    unfused.set_lora_weights([0.0])
    assert not torch.equal(out_fused, unfused.generate_float(REQ))  # the small weight is not rounded away
