"""Checkpoint folders: atomic writes, finding the newest complete one, rotation.

Layout in `output_dir`:
- ``checkpoint-{step}.safetensors``  the LoRA (kohya format, written by `ufo_video.lora.formats`)
- ``checkpoint-{step}/``              the full training state when `save_state` is on:
  ``lora.safetensors`` (trainable tensors, exact), ``optimizer.*``, ``lr_scheduler.json``,
  ``rng-{rank}.*`` (python/numpy/torch/cuda per process), ``progress.json`` (step, epoch, batch
  in epoch, counters) and the marker ``COMPLETE``. Under DeepSpeed the optimizer is not in
  ``optimizer.*`` but in ``engine/``: accelerate's ``save_state`` folder, where every process
  writes its ZeRO shard (fp32 master weights and moments); the frozen base weights are left out.
  Under FSDP the optimizer state is gathered from the shards into ``fsdp-optimizer.*`` (keyed by
  parameter name; see `train.fsdp`).

A state folder is assembled under a hidden temporary name, every file fsynced, the marker written
last, then renamed into place; so a run killed at any moment (kill -9 during a save included)
leaves either a complete folder or a temporary one that resume ignores and the next run deletes.
Rotation (`checkpoints_total_limit`) runs only after the new checkpoint is complete. A full disk
during a save removes the temporary folder and that step's new LoRA file at once (`saving.
save_checkpoint`), and the message names the checkpoint that resume will pick (`kept_checkpoints`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ufo_video.atomic import fsync_dir, fsync_file, fsync_tree
from ufo_video.errors import UfoError
from ufo_video.train import state_io

MARKER = "COMPLETE"
ENGINE_DIR = "engine"  # DeepSpeed: accelerate's save_state folder (every process's optimizer shard)
_STEP_RE = re.compile(r"^checkpoint-(\d+)(\.safetensors)?$")
TMP_PREFIX = ".tmp-checkpoint-"


@dataclass
class Progress:
    """Where training stands: optimizer steps done and the data position after the last one."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this epoch already consumed (per process)
    nan_skips: int = 0
    fingerprint: str = ""
    num_processes: int = 1
    settings: dict = field(default_factory=dict)  # UfoConfig.flat_settings(): a resume names what changed


def state_dir(output_dir: Path, step: int) -> Path:
    return output_dir / f"checkpoint-{step}"


def lora_file(output_dir: Path, step: int) -> Path:
    return output_dir / f"checkpoint-{step}.safetensors"


def tmp_dir(output_dir: Path, step: int) -> Path:
    return output_dir / f"{TMP_PREFIX}{step}"


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def list_steps(output_dir: Path) -> dict[int, list[Path]]:
    """Step -> the checkpoint paths of that step (LoRA file and/or complete state folder)."""
    found: dict[int, list[Path]] = {}
    if not output_dir.is_dir():
        return found
    for entry in output_dir.iterdir():
        m = _STEP_RE.match(entry.name)
        if not m:
            continue
        if entry.is_dir() and not is_complete(entry):
            continue
        found.setdefault(int(m.group(1)), []).append(entry)
    return found


def latest_state(output_dir: Path) -> Path | None:
    """The complete state folder with the highest step, if any."""
    steps = [int(p.name.split("-")[1]) for p in output_dir.glob("checkpoint-*") if p.is_dir() and is_complete(p)]
    return state_dir(output_dir, max(steps)) if steps else None


def kept_checkpoints(output_dir: Path) -> tuple[str, str]:
    """(what the folder keeps, how to go on) for the one-line message of a run stopped by a full disk."""
    latest = latest_state(output_dir)
    if latest is not None:
        return (f"nothing was replaced: the newest complete checkpoint ({latest.name}) is kept",
                "rerun with resume_from_checkpoint=latest")  # fmt: skip
    loras = sorted(list_steps(output_dir))
    have = (f"the newest LoRA ({lora_file(output_dir, loras[-1]).name}) is kept, without a training state to "
            "resume from (train.save_state)" if loras else "no checkpoint was saved yet")  # fmt: skip
    return f"nothing was replaced: {have}", "rerun with resume_from_checkpoint=latest (it starts again from step 0)"


def resolve_resume(spec: str, output_dir: Path) -> Path | None:
    """`latest` -> newest complete state folder (None when there is none); a path -> that state."""
    if spec == "latest":
        return latest_state(output_dir)
    path = Path(spec)
    if path.suffix == ".safetensors":
        path = path.with_suffix("")
    if not path.is_dir():
        raise UfoError(
            f"resume_from_checkpoint={spec}: no state folder {path}. Resuming needs the folder written "
            "with train.save_state=true (a checkpoint-N.safetensors alone holds only the LoRA)"
        )
    if not is_complete(path):
        raise UfoError(f"resume_from_checkpoint={spec}: {path} is incomplete (no {MARKER} marker); use 'latest'")
    return path


def remove_stale_tmp(output_dir: Path) -> list[Path]:
    """Delete temporary folders left by a run killed while saving."""
    stale = [p for p in output_dir.glob(f"{TMP_PREFIX}*") if p.is_dir()]
    for p in stale:
        shutil.rmtree(p)
    return stale


def begin_state(output_dir: Path, step: int) -> Path:
    """Create the empty temporary folder of a new state (main process)."""
    tmp = tmp_dir(output_dir, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_main_state(
    tmp: Path,
    *,
    trainable: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None,
    lr_scheduler,
    progress: Progress,
) -> None:
    """`optimizer` None: an engine that saved its own state (DeepSpeed, see ENGINE_DIR)."""
    save_file({k: v.detach().float().cpu().contiguous() for k, v in trainable.items()}, str(tmp / "lora.safetensors"))
    fsync_file(tmp / "lora.safetensors")
    if optimizer is not None:
        state_io.save_nested(optimizer.state_dict(), tmp, "optimizer")
    state_io.save_nested(lr_scheduler.state_dict(), tmp, "lr_scheduler")
    (tmp / "progress.json").write_text(json.dumps(asdict(progress), indent=2))
    fsync_file(tmp / "progress.json")


def write_rng(tmp: Path, rank: int) -> None:
    state_io.save_nested(state_io.rng_state(), tmp, f"rng-{rank}")


def finish_state(tmp: Path, output_dir: Path, step: int) -> Path:
    """Marker last, then the rename that makes the state visible."""
    if (tmp / ENGINE_DIR).is_dir():  # written by DeepSpeed/accelerate without fsync
        fsync_tree(tmp / ENGINE_DIR)
        for sub in [tmp / ENGINE_DIR, *(d for d in (tmp / ENGINE_DIR).rglob("*") if d.is_dir())]:
            fsync_dir(sub)
    (tmp / MARKER).write_text("ok\n")
    fsync_file(tmp / MARKER)
    fsync_dir(tmp)
    final = state_dir(output_dir, step)
    if final.exists():  # same step saved again (e.g. Ctrl-C right after a scheduled save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(output_dir)
    return final


def read_state(folder: Path, rank: int) -> dict:
    """Everything a resume needs from a complete state folder."""
    progress = Progress(**json.loads((folder / "progress.json").read_text()))
    rng_name = f"rng-{rank}" if (folder / f"rng-{rank}.json").is_file() else "rng-0"
    return {
        "progress": progress,
        "lora": load_file(str(folder / "lora.safetensors")),
        "optimizer": state_io.load_nested(folder, "optimizer") if (folder / "optimizer.json").is_file() else None,
        "lr_scheduler": state_io.load_nested(folder, "lr_scheduler"),
        "rng": state_io.load_nested(folder, rng_name),
    }


def rotate(output_dir: Path, limit: int | None) -> list[Path]:
    """Keep the newest `limit` checkpoint steps (LoRA files and state folders); return removed paths."""
    if limit is None:
        return []
    steps = list_steps(output_dir)
    removed: list[Path] = []
    for step in sorted(steps)[:-limit] if len(steps) > limit else []:
        for path in steps[step]:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed
