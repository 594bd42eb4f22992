"""Trainer runs in separate processes: 2-process DDP, the guide's script (kill -9 and resume, with live
decode workers: tests/test_process_lifetime.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_train_helpers import losses, lora, make_dataset, max_diff, write_config
from ufo_video.cli import main

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds"))


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    return env


def test_two_processes_equal_one_process_with_the_same_global_batch(tiny_model, dataset, tmp_path):
    one = tmp_path / "one"
    # fp32 LoRA files: the comparison below is finer than one bf16 rounding step
    assert main(["train", str(write_config(tmp_path / "a.toml", tiny_model, dataset, one, train_batch_size=2,
                                           save_dtype="fp32"))]) == 0
    two = tmp_path / "two"
    cfg = write_config(tmp_path / "b.toml", tiny_model, dataset, two, train_batch_size=1, save_dtype="fp32")
    # torchrun + the gloo backend; `accelerate launch --multi_gpu` runs the same code on GPUs
    result = subprocess.run(
        [str(BIN / "torchrun"), "--nproc_per_node", "2", "-m", "ufo_video", "train", str(cfg)],
        env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # one real backward before DDP wraps the model: the last block's text stream feeds nothing,
    # so its LoRA gets no gradient and DDP must look for unused parameters (only then)
    assert "trainable tensors get no gradient" in result.stdout and "find_unused_parameters=true" in result.stdout
    state = two / "checkpoint-4"
    assert (state / "rng-0.json").is_file() and (state / "rng-1.json").is_file()
    assert [s for s, _ in losses(two)] == [1, 2, 3, 4]
    for (_, a), (_, b) in zip(losses(one), losses(two)):
        assert abs(a - b) <= 1e-5
    # The gradients agree up to the all-reduce's summation order; AdamW (eps 1e-10) turns a
    # near-zero gradient's rounding noise into an update of up to lr=1e-4, so the weights are
    # compared at a fraction of one step's size (different samples would differ by ~lr per step).
    assert max_diff(lora(one / "checkpoint-4.safetensors"), lora(two / "checkpoint-4.safetensors")) <= 5e-5


def test_train_ufo_sh_with_the_guides_environment(tiny_model, dataset, tmp_path):
    out = tmp_path / "out"
    env = _env() | {"MODEL_NAME": str(tiny_model), "DATASET_NAME": str(dataset),
                    "DATASET_META_NAME": str(dataset / "metadata.json"), "PYTHON": sys.executable}  # fmt: skip
    flags = ["--max_train_steps=2", "--checkpointing_steps=2", f"--output_dir={out}", "--rank=4", "--network_alpha=2",
             "--image_sample_size=32", "--video_sample_size=32", "--token_sample_size=32",
             "--video_sample_n_frames=5", "--mixed_precision=no", "--train_batch_size=1", "--seed=7",
             "--gradient_checkpointing", "--low_vram", "--enable_bucket", "--max_grad_norm=0.05",
             "--train_mode=inpaint", "--learning_rate=1e-4",
             "model.weight_dtype=fp32", "model.device=cpu", "dataloader_num_workers=0", "report_to=none"]  # fmt: skip
    result = subprocess.run(["bash", str(REPO / "scripts/train_ufo.sh"), *flags], env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "checkpoint-2.safetensors").is_file()
    resolved = (out / "config.toml").read_text()
    assert 'clip_mode = "static"' in resolved and "rank = 4" in resolved and "seed = 7" in resolved

    bad = subprocess.run(["bash", str(REPO / "scripts/train_ufo.sh"), "--rnak=4"], env=env, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "unknown flag --rnak" in bad.stderr and "Traceback" not in bad.stderr
    missing = subprocess.run(["bash", str(REPO / "scripts/train_lora.sh")], env=env | {"MODEL_NAME": str(tmp_path / "none"),
                             "LAUNCHER": sys.executable}, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 2 and "model folder not found" in missing.stderr and "Traceback" not in missing.stderr
