"""The disk a run's checkpoints need, printed before step 1, and a refusal when it is not there.

Why before step 1: a 12B LoRA of rank 128 is 1.8 GB in bf16 (3.7 GB in fp32); saved every 100
of 3000 steps with no `checkpoints_total_limit` that is 30 files, and a full disk at step 2,400
loses the save (and the hours before it). The estimate counts, per checkpoint, the LoRA file in
`save_dtype` and, with `save_state`, the exact training state (fp32 LoRA and AdamW's two fp32
moments: 12 bytes per trained value); checkpoints already in the folder count towards the limit.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ufo_video.config import UfoConfig
from ufo_video.errors import UfoError

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


def size_text(n: float) -> str:
    """Bytes in the unit that fits (decimal, as disks are sold and `df -H` shows): 512 B, 16.5 KB,
    209 KB, 1.8 GB. One function for every size the trainer prints, so one number never shows up
    in two units or as "0.0 MB"."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 999.5 or unit == "TB":
            return f"{n:.1f} {unit}" if n < 99.95 else f"{n:.0f} {unit}"
    return f"{n:.0f} TB"  # pragma: no cover (the loop returns)


def describe(plan: DiskPlan, cfg: UfoConfig, free: int) -> str:
    """The one line on checkpoint disk use (the start summary has no sizes of its own)."""
    t = cfg.train
    state = f" + training state {size_text(plan.state_bytes)}" if plan.state_bytes else ""
    return (f"  disk: {plan.saves} checkpoint(s) to write (checkpointing_steps={t.checkpointing_steps}), each "
            f"~{size_text(plan.per_checkpoint)} (LoRA file in {t.save_dtype} {size_text(plan.lora_bytes)}{state}); "
            f"at most {plan.kept_at_once} kept at once (checkpoints_total_limit={t.checkpoints_total_limit}) -> "
            f"needs ~{size_text(plan.needed)} more; {size_text(free)} free")


def _remedies(plan: DiskPlan, cfg: UfoConfig) -> list[str]:
    """The settings that would make this run need less disk, each only where it changes something."""
    t = cfg.train
    out = []
    if plan.state_bytes:
        lighter = replace(plan, state_bytes=0)
        out.append(f"train.save_state=false (LoRA files only, ~{size_text(lighter.needed)}; no exact resume)")
    newest = replace(plan, limit=1)
    if newest.kept_at_once < plan.kept_at_once:
        out.append(f"train.checkpoints_total_limit=1 (keeps the newest only, ~{size_text(newest.needed)}; "
                   f"now {t.checkpoints_total_limit})")
    # fewer saves help only where their count, not the limit, sets how many are kept
    if plan.saves > 1 and (plan.limit is None or plan.existing + plan.saves <= plan.limit + 1):
        out.append(f"a larger train.checkpointing_steps (now {t.checkpointing_steps}: {plan.saves} checkpoints)")
    if t.save_dtype == "fp32":
        out.append("train.save_dtype=bf16 (LoRA files half the size)")
    return out


def check_disk(plan: DiskPlan, cfg: UfoConfig, free: int, where: Path) -> None:
    if plan.needed > free:
        t = cfg.train
        remedies = _remedies(plan, cfg)
        options = "; ".join(remedies + ["a train.output_dir on a disk with more space, or free space"])
        raise DiskSpaceError(
            f"train.output_dir={t.output_dir}: the run needs ~{size_text(plan.needed)} for {plan.kept_at_once} "
            f"checkpoint(s) of ~{size_text(plan.per_checkpoint)} but {where} has {size_text(free)} free. "
            f"Options: {options}; no step was run"
        )
