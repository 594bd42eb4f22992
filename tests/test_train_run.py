"""End-to-end trainer runs in-process on a tiny model and a tiny generated dataset (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_train_helpers import losses, lora, make_dataset, max_diff, metadata, write_config
from ufo_video.cli import main
from ufo_video.train import loop as loop_module


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds"))


def _run(cfg: Path, *overrides: str) -> int:
    return main(["train", str(cfg), *overrides])


def test_static_inpaint_run_writes_lora_state_samples_and_logs(tiny_model, dataset, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", tiny_model, dataset, out, report_to="tensorboard", validation_steps=4,
                       validation_prompts=["a red ball"], checkpoints_total_limit=1)  # fmt: skip
    assert _run(cfg, "infer.num_inference_steps=2") == 0
    text = capsys.readouterr().out
    assert "trainable parameters" in text and "training finished: 4 steps" in text
    assert "checkpoint-4.safetensors" in text
    # rotation: only the newest checkpoint (file + state) is left
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-4.safetensors"]
    meta = metadata(out / "checkpoint-4.safetensors")
    assert meta["ufo_step"] == "4" and meta["ufo_rank"] == "4" and meta["ufo_alpha"] == "4"
    assert meta["ufo_training_weight"] == "1.0" and meta["ufo_base_model"] == str(tiny_model)
    assert len(meta["ufo_config_fingerprint"]) == 16 and json.loads(meta["ufo_target_modules"])
    weights = lora(out / "checkpoint-4.safetensors")
    assert any(k.startswith("lora_unet__") and k.endswith(".lora_up.weight") for k in weights)
    assert any(float(v.abs().max()) > 0 for k, v in weights.items() if k.endswith("lora_up.weight")), "LoRA did not train"
    state = out / "checkpoint-4"
    names = {p.name for p in state.iterdir()}
    assert {"COMPLETE", "lora.safetensors", "optimizer.json", "lr_scheduler.json", "progress.json", "rng-0.json"} <= names
    progress = json.loads((state / "progress.json").read_text())
    assert progress["step"] == 4 and progress["epoch"] == 1 and progress["batch_in_epoch"] == 1  # 3 batches/epoch
    assert "[train]" in (out / "config.toml").read_text()
    assert [s for s, _ in losses(out)] == [1, 2, 3, 4]
    samples = sorted(p.name for p in (out / "samples").iterdir())
    assert samples == ["step-000004-prompt0-w0.15.mp4", "step-000004-prompt0-w1.mp4"]
    assert list((out / "logs").rglob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    ("model_key", "clip_mode", "train_mode"),
    [("diffusers", "video", "normal"), ("original", "video", "inpaint")],  # t2v static normal: tests/contract
)
def test_clip_and_train_modes(tiny_models, dataset, tmp_path, model_key, clip_mode, train_mode):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", tiny_models[model_key], dataset, out, max_train_steps=2,
                       train_mode=train_mode, save_state=False, gradient_checkpointing=True)  # fmt: skip
    assert _run(cfg, f"clip_mode={clip_mode}") == 0
    assert (out / "checkpoint-2.safetensors").is_file() and not (out / "checkpoint-2").exists()
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in losses(out))


def test_ctrl_c_saves_and_resume_is_exact(tiny_model, dataset, tmp_path, monkeypatch, capsys):
    """4 steps straight == Ctrl-C during step 3 (checkpoint saved at step 2), then resume to 4.
    Mid-epoch stop, gradient accumulation 2, a linear LR schedule and logit-normal sigmas."""
    common = dict(max_train_steps=4, checkpointing_steps=3, gradient_accumulation_steps=2, train_batch_size=1,
                  lr_scheduler="linear", weighting_scheme="logit_normal")  # fmt: skip
    straight = tmp_path / "straight"
    assert _run(write_config(tmp_path / "a.toml", tiny_model, dataset, straight, **common)) == 0
    split = tmp_path / "split"
    cfg = write_config(tmp_path / "b.toml", tiny_model, dataset, split, **common)
    real, calls = loop_module.batch_loss, []

    def interrupt_on_fifth(*args):
        calls.append(1)
        if len(calls) == 5:  # first micro-batch of step 3
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(loop_module, "batch_loss", interrupt_on_fifth)
    assert _run(cfg) == 130
    assert "interrupted at step 2" in capsys.readouterr().out
    assert (split / "checkpoint-2" / "COMPLETE").is_file() and (split / "checkpoint-2.safetensors").is_file()
    monkeypatch.setattr(loop_module, "batch_loss", real)
    assert _run(cfg, "resume_from_checkpoint=latest") == 0
    assert "resumed from" in capsys.readouterr().out
    assert losses(straight) == losses(split)  # bitwise equal per-step losses, steps 1..4 once each
    assert max_diff(lora(straight / "checkpoint-4.safetensors"), lora(split / "checkpoint-4.safetensors")) <= 1e-6


def _nan_on(monkeypatch, calls_with_nan: set[int]):
    """Make the loss NaN on the given (1-based) micro-batch calls."""
    real, calls = loop_module.batch_loss, []

    def maybe_nan(*args):
        calls.append(1)
        loss = real(*args)
        return loss * float("nan") if len(calls) in calls_with_nan else loss

    monkeypatch.setattr(loop_module, "batch_loss", maybe_nan)


def test_nan_stop_writes_no_nan_weights(tiny_model, dataset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", tiny_model, dataset, out, checkpointing_steps=1)
    _nan_on(monkeypatch, {3})
    assert _run(cfg) == 2
    err = capsys.readouterr().err
    assert "step 3: the loss is not finite" in err and "nan_policy=skip" in err
    assert sorted(p.name for p in out.glob("checkpoint-*.safetensors")) == ["checkpoint-1.safetensors", "checkpoint-2.safetensors"]
    assert all(torch.isfinite(v).all() for v in lora(out / "checkpoint-2.safetensors").values())


def test_nan_skip_counts_and_limit(tiny_model, dataset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", tiny_model, dataset, out, nan_policy="skip", max_nan_skips=1)
    _nan_on(monkeypatch, {2})
    assert _run(cfg) == 0
    text = capsys.readouterr().out
    assert "batch skipped (1/1)" in text and "non-finite steps skipped: 1" in text
    assert [s for s, _ in losses(out)] == [1, 2, 3, 4]  # 5 batches used for 4 steps
    assert all(torch.isfinite(v).all() for v in lora(out / "checkpoint-4.safetensors").values())
    _nan_on(monkeypatch, {2, 3})
    assert _run(cfg, f"output_dir={tmp_path / 'out2'}") == 2
    assert "max_nan_skips=1" in capsys.readouterr().err


def test_oom_names_the_memory_options(tiny_model, dataset, tmp_path, monkeypatch, capsys):
    def oom(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(loop_module, "batch_loss", oom)
    assert _run(write_config(tmp_path / "c.toml", tiny_model, dataset, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    for option in ("low_vram", "gradient_checkpointing", "fp8_base", "video_sample_size", "video_sample_n_frames"):
        assert option in err


def test_missing_model_or_dataset_is_a_message(tiny_model, dataset, tmp_path, capsys):
    cfg = write_config(tmp_path / "c.toml", tmp_path / "nope", dataset, tmp_path / "out")
    assert _run(cfg) == 2
    assert "model folder not found" in capsys.readouterr().err
    cfg = write_config(tmp_path / "c.toml", tiny_model, tmp_path / "nodata", tmp_path / "out")
    assert _run(cfg) == 2
    err = capsys.readouterr().err
    assert "dataset folder not found" in err and "datasets/internal_datasets" in err
    cfg = write_config(tmp_path / "c.toml", tiny_model, dataset, tmp_path / "out")
    assert _run(cfg, f"train_data_meta={tmp_path / 'missing.json'}") == 2
    assert "metadata not found" in capsys.readouterr().err
    assert _run(cfg, "resume_from_checkpoint=/no/such/checkpoint-5") == 2
    assert "save_state" in capsys.readouterr().err


def test_setup_memory_options_fp8_base_bf16_and_lora_only_optimizer(tiny_model, dataset, tmp_path):
    from accelerate.state import AcceleratorState

    from ufo_video.config import load_config
    from ufo_video.train.setup import make_accelerator, setup

    cfg = load_config(write_config(tmp_path / "c.toml", tiny_model, dataset, tmp_path / "out"),
                      ["fp8_base=true", "model.weight_dtype=bf16", "mixed_precision=bf16", "gradient_checkpointing=true"])  # fmt: skip
    acc = make_accelerator(cfg, tmp_path / "out")
    try:
        run = setup(cfg, acc, batches_per_epoch=3)
        named = dict(run.transformer.named_parameters())
        trainable = {n for n, p in named.items() if p.requires_grad}
        assert trainable and all(".lora_A.ufo." in n or ".lora_B.ufo." in n for n in trainable)
        assert all(named[n].dtype == torch.float32 for n in trainable)
        assert named["transformer_blocks.0.attn1.to_q.base_layer.weight"].dtype == torch.float8_e4m3fn
        assert run.transformer.is_gradient_checkpointing
        opt_params = {id(p) for g in run.optimizer.param_groups for p in g["params"]}
        assert opt_params == {id(named[n]) for n in trainable}
        group = run.optimizer.param_groups[0]
        assert group["weight_decay"] == 5e-2 and group["eps"] == 1e-10 and group["lr"] == 1e-4
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
