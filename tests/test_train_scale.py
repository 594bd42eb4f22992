"""Checkpoints users can afford: save_dtype, the disk estimate printed before step 1 and the refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from test_train_helpers import make_dataset, write_config
from ufo_video.cli import main
from ufo_video.config import build_config
from ufo_video.train import disk


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds"), images=2, videos=0)


def _dtypes(path: Path) -> set:
    with safe_open(str(path), framework="pt") as f:
        return {f.get_slice(k).get_dtype() for k in f.keys() if "lora_" in k}


def test_planned_saves_by_hand() -> None:
    assert disk.planned_saves(0, 3000, 100) == 30
    assert disk.planned_saves(0, 250, 100) == 3  # 100, 200 and the last step 250
    assert disk.planned_saves(200, 250, 100) == 1
    assert disk.planned_saves(250, 250, 100) == 0


def test_disk_plan_counts_the_limit_and_existing_checkpoints() -> None:
    cfg = build_config({"train": {"checkpointing_steps": 100, "checkpoints_total_limit": 3, "save_state": True}})
    params = [torch.nn.Parameter(torch.zeros(1000, 10))]  # 10,000 trained values
    plan = disk.plan_disk(cfg, params, 0, 3000, existing=0, save_dtype=torch.bfloat16)
    assert plan.lora_bytes == 10_000 * 2 + disk.HEADER_BYTES_PER_TENSOR
    assert plan.state_bytes == 10_000 * 12
    assert (plan.saves, plan.kept_at_once) == (30, 4)  # limit 3, plus the new one before rotation
    assert plan.needed == 4 * plan.per_checkpoint
    resumed = disk.plan_disk(cfg, params, 2000, 3000, existing=3, save_dtype=torch.bfloat16)
    assert resumed.needed == 1 * resumed.per_checkpoint  # three already on disk count
    cfg.train.checkpoints_total_limit = None
    assert disk.plan_disk(cfg, params, 0, 3000, 0, torch.float32).needed == 30 * (40_000 + 160 + 120_000)


def test_lora_files_default_to_bf16_fp32_on_request(tiny_model, dataset, tmp_path, capsys) -> None:
    out = tmp_path / "bf16"
    assert main(["train", str(write_config(tmp_path / "a.toml", tiny_model, dataset, out, max_train_steps=1))]) == 0
    assert _dtypes(out / "checkpoint-1.safetensors") == {"BF16"}
    assert "disk: 1 checkpoint(s) to write" in capsys.readouterr().out
    with safe_open(str(out / "checkpoint-1" / "lora.safetensors"), framework="pt") as f:  # resume state stays exact
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
    out = tmp_path / "fp32"
    cfg = write_config(tmp_path / "b.toml", tiny_model, dataset, out, max_train_steps=1, save_dtype="fp32")
    assert main(["train", str(cfg)]) == 0
    assert _dtypes(out / "checkpoint-1.safetensors") == {"F32"}


def test_too_small_disk_is_refused_before_step_1(tiny_model, dataset, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(disk, "free_bytes", lambda folder: (1000, Path("/small")))
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "a.toml", tiny_model, dataset, out, max_train_steps=4, checkpointing_steps=1)
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "train.checkpoints_total_limit=1" in err and "train.checkpointing_steps" in err and "/small" in err
    assert "train.save_state=false" in err and "has 1.0 KB free" in err
    assert "save_dtype" not in err  # bf16 already: suggesting it would change nothing
    assert not list(out.glob("checkpoint-*")) and not (out / "losses.jsonl").exists()


def test_the_disk_refusal_suggests_only_what_would_change_something() -> None:
    params = [torch.nn.Parameter(torch.zeros(1000, 10))]

    def refusal(**train) -> str:
        cfg = build_config({"train": {"checkpointing_steps": 100, **train}})
        plan = disk.plan_disk(cfg, params, 0, 300, 0, save_dtype=torch.float32 if cfg.train.save_dtype == "fp32"
                              else torch.bfloat16)
        with pytest.raises(disk.DiskSpaceError) as exc:
            disk.check_disk(plan, cfg, 1000, Path("/small"))
        return str(exc.value)

    everything = refusal(save_dtype="fp32", save_state=True, checkpoints_total_limit=None)
    for remedy in ("save_state=false", "checkpoints_total_limit=1", "checkpointing_steps", "save_dtype=bf16",
                   "train.output_dir on a disk with more space"):
        assert remedy in everything, everything
    nothing_left = refusal(save_dtype="bf16", save_state=False, checkpoints_total_limit=1)
    for remedy in ("save_state=", "checkpoints_total_limit=1 (", "checkpointing_steps (", "save_dtype="):
        assert remedy not in nothing_left, nothing_left
    assert "train.output_dir on a disk with more space, or free space" in nothing_left
    # a limit of 5 with 3 saves: the count binds, so fewer saves (a larger checkpointing_steps) would help
    assert "checkpointing_steps (now 100: 3 checkpoints)" in refusal(checkpoints_total_limit=5)


def test_sizes_are_printed_in_the_unit_that_fits() -> None:
    assert [disk.size_text(n) for n in (512, 16_500, 209_500, 1_800_000_000, 79_980_000_000, 999_999)] == [
        "512 B", "16.5 KB", "210 KB", "1.8 GB", "80.0 GB", "1.0 MB"]
