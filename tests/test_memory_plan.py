"""The memory planner's arithmetic against hand-computed values (the Wan 14B reference figures),
the choice of blocks_to_swap, the error before loading, and the start summary's lines."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from test_train_helpers import make_dataset, write_config
from ufo_video.cli import main
from ufo_video.errors import UfoError
from ufo_video.memory_plan import (GIB, OVERHEAD_BYTES, MemoryPlanError, PlanInputs, estimate_train_peak,
                                   pick_blocks_to_swap, tokens_per_sample)
from ufo_video.train.memory_estimate import resolve_auto_blocks

# Wan 2.1 14B-like: 40 blocks of 0.35e9 (bf16 ~0.7 GB each), 0.3e9 outside them
WAN14 = dict(params_total=14.3e9, params_blocks=14.0e9, n_blocks=40, hidden_dim=5120, ffn_dim=13824,
             largest_linear_params=5120 * 13824)


def _wan(**kw) -> PlanInputs:
    base = {k: int(v) for k, v in WAN14.items()}
    base.update(tokens=tokens_per_sample(21, 480, 832, 16))
    base.update(kw)
    return PlanInputs(**base)


def test_tokens_and_checkpointed_inputs_match_the_reference() -> None:
    assert tokens_per_sample(21, 480, 832, 16) == 32_760  # 81 frames -> 21 latent frames, 30 x 52
    assert tokens_per_sample(21, 512, 512, 16) == 21_504
    est = estimate_train_peak(_wan())
    assert est.parts["checkpointed activations"] == 40 * 32_760 * 5120 * 2
    assert est.parts["checkpointed activations"] / 1e9 == pytest.approx(13.42, abs=0.01)  # "~13.4 GB"
    at_512 = estimate_train_peak(_wan(tokens=21_504)).parts["checkpointed activations"]
    assert at_512 / 1e9 == pytest.approx(8.8, abs=0.05)  # "~8.8 GB" at 81x512x512


def test_parts_by_hand() -> None:
    p = _wan(lora_params=100_000_000, storage="fp8")
    est = estimate_train_peak(p, blocks_to_swap=0)
    assert est.parts["base weights"] == int(0.3e9 * 1 + 40 * 0.35e9 * 1)
    assert est.parts["LoRA + AdamW"] == 100_000_000 * 16  # fp32 weight + grad + 2 fp32 moments
    one_block = 32_760 * (12 * 5120 + 2 * 13824) * 2
    assert est.parts["block workspace"] == int(1.5 * one_block) + 5120 * 13824 * 2  # + one Linear de-quantised
    assert est.parts["CUDA overhead"] == OVERHEAD_BYTES
    assert est.total == sum(est.parts.values())
    # 30 of 40 swapped: 10 resident + a ring of 2 block buffers
    swapped = estimate_train_peak(p, blocks_to_swap=30)
    assert swapped.parts["base weights"] == int(0.3e9 + 12 * 0.35e9)
    scaled = estimate_train_peak(_wan(storage="fp8_scaled"))
    assert scaled.parts["base weights"] == int(0.3e9 * 2 + 40 * 0.35e9 * (1 + 2 / 64))
    offloaded = estimate_train_peak(_wan(activation_offload=True))
    assert offloaded.parts["checkpointed activations"] == 0
    assert offloaded.parts["block workspace"] == est.parts["block workspace"] - 5120 * 13824 * 2 + 2 * 32_760 * 5120 * 2
    assert "GiB" in est.describe() and "checkpointed activations 12.5" in est.describe()
    with pytest.raises(ValueError):
        estimate_train_peak(p, blocks_to_swap=41)  # at most every block


def test_pick_smallest_swap_that_fits_with_margin() -> None:
    p = _wan(tokens=21_504, storage="fp8", activation_offload=True, lora_params=150_000_000)
    n, est = pick_blocks_to_swap(p, 24 * GIB)
    assert 0 < n < 40 and est.total * 1.1 <= 24 * GIB
    assert estimate_train_peak(p, n - 1).total * 1.1 > 24 * GIB  # the smallest
    assert pick_blocks_to_swap(p, 200 * GIB)[0] == 0
    with pytest.raises(MemoryPlanError) as info:
        pick_blocks_to_swap(_wan(), 16 * GIB)  # bf16, activations on the device: 13.4 GB of inputs alone
    msg = str(info.value)
    assert isinstance(info.value, UfoError)
    assert "cannot fit" in msg and "40 of 40 blocks swapped" in msg and "16.0 GiB free" in msg
    assert "activation_offload=true" in msg and "fp8_base=true" in msg and "fewer frames" in msg
    with pytest.raises(MemoryPlanError) as info:
        pick_blocks_to_swap(_wan(storage="fp8", activation_offload=True, tokens=300_000), 16 * GIB)
    assert "fp8_base" not in str(info.value) and "activation_offload" not in str(info.value)  # already on


def test_resolve_auto_blocks_cpu_and_cuda_numbers() -> None:
    p = _wan(tokens=21_504, storage="fp8", activation_offload=True)
    assert resolve_auto_blocks(p, torch.device("cpu"))[0] == 0
    n, line = resolve_auto_blocks(p, torch.device("cuda"), free_bytes=24 * GIB)
    assert n == pick_blocks_to_swap(p, 24 * GIB)[0] and f"-> {n} of 40" in line
    with pytest.raises(MemoryPlanError):
        resolve_auto_blocks(_wan(), torch.device("cuda"), free_bytes=8 * GIB)


def test_start_summary_prints_the_estimate(tiny_model: Path, tmp_path: Path, capsys) -> None:
    ds = make_dataset(tmp_path / "ds")
    cfg = write_config(tmp_path / "c.toml", tiny_model, ds, tmp_path / "out", max_train_steps=1, save_state=False,
                       checkpointing_steps=1)  # fmt: skip
    assert main(["train", str(cfg)]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "device memory estimate" in ln)
    assert "estimated for a CUDA device" in line and "base weights" in line and "LoRA + AdamW" in line
    assert "tokens per sample" in line and "base fp32" in line


WAN_CONFIGS = Path(__file__).resolve().parents[1] / "src" / "ufo_video" / "assets" / "wan-configs"


def test_model_plan_cli_on_real_configs(capsys) -> None:
    import json

    args = ["model", "plan", str(WAN_CONFIGS / "wan2.1-t2v-1.3b"), "--size", "480", "832", "--frames", "81",
            "--rank", "32", "--low-vram", "--cards", "8", "80"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "32760 tokens per sample" in out and "not measured" in out
    assert "80 GB card: fits with blocks_to_swap=0" in out
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tokens"] == 32_760
    assert data["cards"]["80"] == {"blocks_to_swap": 0, "estimate_gib": data["estimate_gib"]}
    # 30 blocks of 1.3B: bf16 at 81x480x832 does not fit 8 GB without offload; the advice names what is off
    assert data["cards"]["8"] is None or data["cards"]["8"]["blocks_to_swap"] > 0
    assert main(["model", "plan", str(WAN_CONFIGS / "wan2.1-t2v-1.3b"), "--frames", "81", "--size", "480", "832",
                 "--cards", "4"]) == 0
    assert "4 GB card: does not fit (" in capsys.readouterr().out


def test_before_load_resolves_auto(monkeypatch) -> None:
    """`train.blocks_to_swap = "auto"` (the key the block-swap branch adds; set here directly):
    0 on the CPU with a note; on CUDA the planner's N for the card's free memory, or an error
    before anything loads."""
    from ufo_video.config import load_config
    from ufo_video.train import memory_estimate

    cfg = load_config(None, [f"model.pretrained_model_name_or_path={WAN_CONFIGS / 'wan2.1-t2v-1.3b'}",
                             "data.video_sample_n_frames=81", "data.video_sample_size=512", "lora.rank=32",
                             "train.low_vram=true"])  # fmt: skip
    object.__setattr__(cfg.train, "blocks_to_swap", "auto")
    lines, n = memory_estimate.before_load(cfg, torch.device("cpu"))
    assert n == 0 and any("blocks_to_swap=auto -> 0: no CUDA device" in ln for ln in lines)
    assert any("estimated for a CUDA device" in ln for ln in lines)
    inputs, _ = memory_estimate.plan_inputs(cfg, "cuda")
    assert inputs.tokens == 21 * 32 * 32 and inputs.n_blocks == 30 and inputs.hidden_dim == 1536
    need = pick_blocks_to_swap(inputs, int(8 * GIB))[0]
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(8 * GIB), int(80 * GIB)))
    lines, n = memory_estimate.before_load(cfg, torch.device("cuda"))
    assert n == need > 0 and any(f"blocks_to_swap=auto -> {need} of 30" in ln for ln in lines)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(1 * GIB), int(80 * GIB)))
    with pytest.raises(MemoryPlanError, match="cannot fit"):
        memory_estimate.before_load(cfg, torch.device("cuda"))
