"""The disk a run's checkpoints need, printed before step 1, and a refusal when it is not there.

Why before step 1: a 12B LoRA of rank 128 is 1.8 GB in bf16 (3.7 GB in fp32); saved every 100
of 3000 steps with no `checkpoints_total_limit` that is 30 files, and a full disk at step 2,400
loses the save (and the hours before it). The estimate counts, per checkpoint, the LoRA file in
`save_dtype` and, with `save_state`, the exact training state (fp32 LoRA and AdamW's two fp32
moments: 12 bytes per trained value); checkpoints already in the folder count towards the limit.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ufo_video.config import UfoConfig
from ufo_video.errors import UfoError

GB = 1000**3
STATE_BYTES_PER_VALUE = 4 + 4 + 4  # fp32 LoRA copy + AdamW exp_avg + exp_avg_sq
HEADER_BYTES_PER_TENSOR = 160  # safetensors header entry (name, dtype, shape, offsets), generous


class DiskSpaceError(UfoError):
    """The output disk cannot hold the checkpoints the run will keep."""


@dataclass(frozen=True)
class DiskPlan:
    lora_bytes: int  # one LoRA file
    state_bytes: int  # one state folder (0 without save_state)
    saves: int  # checkpoints this run will still write
    existing: int  # checkpoint steps already in the output folder
    limit: int | None  # checkpoints_total_limit

    @property
    def per_checkpoint(self) -> int:
        return self.lora_bytes + self.state_bytes

    @property
    def kept_at_once(self) -> int:
        """Most checkpoints on disk at one moment: rotation runs after the new one is complete,
        so `limit + 1` exist briefly."""
        total = self.existing + self.saves
        return total if self.limit is None else min(total, self.limit + 1)

    @property
    def needed(self) -> int:
        """Bytes beyond what the folder holds already."""
        return max(0, self.kept_at_once - self.existing) * self.per_checkpoint


def planned_saves(step: int, total: int, every: int) -> int:
    """Checkpoints written after `step`: every `every` steps, plus the last step when it is not one."""
    if total <= step:
        return 0
    regular = total // every - step // every
    return regular + (0 if total % every == 0 else 1)


def lora_bytes(params: list[torch.nn.Parameter], dtype: torch.dtype) -> int:
    values = sum(p.numel() for p in params)
    return values * dtype.itemsize + len(params) * HEADER_BYTES_PER_TENSOR


def plan_disk(cfg: UfoConfig, params: list[torch.nn.Parameter], step: int, total: int, existing: int,
              save_dtype: torch.dtype, state_bytes: int | None = None) -> DiskPlan:
    """`state_bytes` overrides the per-checkpoint state estimate (an engine with its own format)."""
    t = cfg.train
    if state_bytes is None:
        state_bytes = sum(p.numel() for p in params) * STATE_BYTES_PER_VALUE if t.save_state else 0
    return DiskPlan(lora_bytes(params, save_dtype), state_bytes, planned_saves(step, total, t.checkpointing_steps),
                    existing, t.checkpoints_total_limit)


def free_bytes(folder: Path) -> tuple[int, Path]:
    """Free bytes on the disk that holds `folder` (or its nearest existing parent)."""
    probe = Path(folder).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free, probe


def _gb(n: int) -> str:
    return f"{n / GB:.2f} GB" if n >= GB / 10 else f"{n / 1000**2:.1f} MB"


def describe(plan: DiskPlan, cfg: UfoConfig, free: int) -> str:
    t = cfg.train
    state = f" + training state {_gb(plan.state_bytes)}" if plan.state_bytes else ""
    return (f"disk: {plan.saves} checkpoint(s) to write (checkpointing_steps={t.checkpointing_steps}), each "
            f"~{_gb(plan.per_checkpoint)} (LoRA file in {t.save_dtype} {_gb(plan.lora_bytes)}{state}); at most "
            f"{plan.kept_at_once} kept at once (checkpoints_total_limit={t.checkpoints_total_limit}) -> needs "
            f"~{_gb(plan.needed)} more; free: {_gb(free)}")


def check_disk(plan: DiskPlan, cfg: UfoConfig, free: int, where: Path) -> None:
    if plan.needed > free:
        t = cfg.train
        raise DiskSpaceError(
            f"train.output_dir={t.output_dir}: the run needs ~{_gb(plan.needed)} for {plan.kept_at_once} checkpoints "
            f"of ~{_gb(plan.per_checkpoint)} but {where} has {_gb(free)} free. Set train.checkpoints_total_limit "
            f"(now {t.checkpoints_total_limit}) to keep only the newest few, raise train.checkpointing_steps "
            f"(now {t.checkpointing_steps}), use save_dtype=bf16, or free space; no step was run"
        )
