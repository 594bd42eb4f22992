"""Block swap and activation offload through `ufo-video train` on tiny models (CPU: host and device
are both the CPU, so the offloaders' code runs with synchronous copies): the same losses and LoRA
bit for bit as the plain run, exact resume, and the errors that name the settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from contract.helpers import geometry, train_mode
from test_offload_generate import swapped_kib
from test_train_helpers import lora, losses, make_dataset, write_config

from ufo_video.cli import main


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds"), images=2, videos=2)


@pytest.fixture(scope="module")
def wan_a14b(tmp_path_factory) -> Path:
    from ufo_video.models.wan.tiny import make_tiny_wan

    return make_tiny_wan(tmp_path_factory.mktemp("wan") / "a14b", "a14b")


@pytest.fixture(scope="module")
def ltx2(tmp_path_factory) -> Path:
    from ufo_video.models.ltx2.tiny import make_tiny_ltx2

    return make_tiny_ltx2(tmp_path_factory.mktemp("ltx2") / "t2v")


def _model(request, family: str) -> tuple[Path, list[str]]:
    """The tiny model and its overrides (a Wan 2.2 A14B run trains its low-noise expert)."""
    if family == "easyanimate":
        return request.getfixturevalue("tiny_model"), []
    folder = request.getfixturevalue("wan_a14b" if family == "wan-a14b" else family)
    side, frames = geometry(folder)
    sizes = [f"{k}={side}" for k in ("image_sample_size", "video_sample_size", "token_sample_size")]
    expert = ["train.expert=transformer_2"] if family == "wan-a14b" else []
    return folder, [*sizes, f"video_sample_n_frames={frames}", f"train.train_mode={train_mode(folder)}", *expert]


def _train(model: Path, dataset: Path, out: Path, *overrides: str, **train) -> int:
    settings = {"max_train_steps": 2, "checkpointing_steps": 2, "gradient_checkpointing": True, "save_state": False}
    settings.update(train)
    cfg = write_config(out.with_suffix(".toml"), model, dataset, out, **settings)
    return main(["train", str(cfg), *overrides])


@pytest.mark.parametrize("family", ["easyanimate", "wan-a14b", "ltx2"])
def test_swap_and_activation_offload_train_bit_for_bit_like_the_plain_run(request, family, dataset, tmp_path, capsys):
    model, extra = _model(request, family)
    runs = {"plain": [], "swap": ["train.blocks_to_swap=2"], "offload": ["train.activation_offload=true"],
            "both": ["train.blocks_to_swap=1", "train.activation_offload=true"]}  # fmt: skip
    outs = {}
    for name, overrides in runs.items():
        outs[name] = tmp_path / name
        assert _train(model, dataset, outs[name], *extra, *overrides) == 0, name
        printed = capsys.readouterr().out
        swapped = next((o for o in overrides if "blocks_to_swap" in o), None)
        assert ("block swap: " in printed) == (swapped is not None)
        if swapped:
            assert f"block swap: {swapped[-1]} of 2 transformer blocks" in printed and swapped_kib(printed) > 0
        assert ("activation offload: " in printed) == ("train.activation_offload=true" in overrides)
    reference = losses(outs["plain"])
    assert len(reference) == 2
    for name in ("swap", "offload", "both"):
        assert losses(outs[name]) == reference, name
        a, b = lora(outs["plain"] / "checkpoint-2.safetensors"), lora(outs[name] / "checkpoint-2.safetensors")
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), name


def test_resume_with_block_swap_is_exact(tiny_model, dataset, tmp_path, capsys):
    """3 steps straight == 2 steps, then resume for the third (both with block swap and activation offload)."""
    swap = ("train.blocks_to_swap=1", "train.activation_offload=true")
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train(tiny_model, dataset, straight, *swap, max_train_steps=3, save_state=True) == 0
    assert _train(tiny_model, dataset, split, *swap, max_train_steps=2, save_state=True) == 0
    assert _train(tiny_model, dataset, split, *swap, "max_train_steps=3", "resume_from_checkpoint=latest",
                  max_train_steps=2, save_state=True) == 0  # fmt: skip
    assert "resumed from" in capsys.readouterr().out
    assert losses(straight) == losses(split)
    a, b = lora(straight / "checkpoint-3.safetensors"), lora(split / "checkpoint-3.safetensors")
    assert all(a[k].equal(b[k]) for k in a)


@pytest.mark.parametrize("overrides,message", [
    (["train.blocks_to_swap=3"], "train.blocks_to_swap=3 but this transformer has 2 blocks; set it to at most 2"),
    (["train.blocks_to_swap=1", "train.gradient_checkpointing=false"],
     "train.blocks_to_swap needs train.gradient_checkpointing=true"),
    (["train.activation_offload=true", "train.gradient_checkpointing=false"],
     "train.activation_offload needs train.gradient_checkpointing=true"),
])  # fmt: skip
def test_settings_the_offloaders_cannot_honour_are_errors(tiny_model, dataset, tmp_path, capsys, overrides, message):
    assert _train(tiny_model, dataset, tmp_path / "out", *overrides) == 2
    assert message in capsys.readouterr().err


def test_a_family_without_the_hook_is_refused(tiny_model, dataset, tmp_path, capsys, monkeypatch):
    from ufo_video.models.base import ModelAdapter
    from ufo_video.models.registry import adapter_for

    monkeypatch.setattr(adapter_for(tiny_model), "swap_blocks", ModelAdapter.swap_blocks)
    assert _train(tiny_model, dataset, tmp_path / "out", "train.blocks_to_swap=1") == 2
    assert "does not support block swap (train.blocks_to_swap" in capsys.readouterr().err


def test_auto_on_the_cpu_swaps_nothing_and_says_so(tiny_model, dataset, tmp_path, capsys):
    assert _train(tiny_model, dataset, tmp_path / "out", "train.blocks_to_swap=auto", max_train_steps=1,
                  checkpointing_steps=1) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "train.blocks_to_swap=auto -> 0: no CUDA device, nothing to swap" in printed and "block swap: " not in printed


def test_two_process_ddp_with_block_swap_equals_ddp_without(tiny_model, dataset, tmp_path):
    """torchrun + gloo, 2 processes: DDP wraps a transformer whose swapped weights sit in host buffers
    (left out of DDP's broadcast); the losses and LoRA equal DDP without swap bit for bit."""
    import os
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    outs = {}
    for name, overrides in (("plain", []), ("swap", ["train.blocks_to_swap=2", "train.activation_offload=true"])):
        outs[name] = tmp_path / name
        cfg = write_config(tmp_path / f"{name}.toml", tiny_model, dataset, outs[name], max_train_steps=2,
                           checkpointing_steps=2, gradient_checkpointing=True, save_state=False, train_batch_size=1)  # fmt: skip
        result = subprocess.run([str(bin_dir / "torchrun"), "--nproc_per_node", "2", "-m", "ufo_video", "train",
                                 str(cfg), *overrides], check=False, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert ("block swap: 2 of 2" in result.stdout) == (name == "swap")
    assert losses(outs["plain"]) == losses(outs["swap"])
    a, b = lora(outs["plain"] / "checkpoint-2.safetensors"), lora(outs["swap"] / "checkpoint-2.safetensors")
    assert all(a[k].equal(b[k]) for k in a)


@pytest.mark.parametrize("scaled", [False, True], ids=["fp8", "fp8_scaled"])
def test_swap_over_fp8_stored_weights_trains_like_fp8_alone(tiny_model, dataset, tmp_path, capsys, scaled):
    """fp8 storage first (plain, or scaled: e4m3 weights + their per-block scales), then the swap
    packs the stored weights and each layer is de-quantised for compute inside its block's run,
    as without the swap."""
    fp8 = ["train.fp8_base=true", "model.weight_dtype=bf16", "train.mixed_precision=bf16",
           f"train.fp8_scaled={str(scaled).lower()}"]
    plain, swap = tmp_path / "plain", tmp_path / "swap"
    assert _train(tiny_model, dataset, plain, *fp8, max_train_steps=1, checkpointing_steps=1) == 0
    capsys.readouterr()
    assert _train(tiny_model, dataset, swap, *fp8, "train.blocks_to_swap=2", max_train_steps=1, checkpointing_steps=1) == 0
    assert swapped_kib(capsys.readouterr().out) > 0
    assert losses(plain) == losses(swap)
    a, b = lora(plain / "checkpoint-1.safetensors"), lora(swap / "checkpoint-1.safetensors")
    assert all(a[k].equal(b[k]) for k in a)
