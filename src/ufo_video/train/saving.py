"""Saving and restoring a run: the LoRA file, the state folder, rotation, exact resume."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ufo_video.atomic import DiskFullError, disk_errors, write_text_atomic
from ufo_video.config import config_to_toml
from ufo_video.train import checkpoint as ckpt
from ufo_video.train import loss_log
from ufo_video.train.checkpoint import Progress
from ufo_video.train.run import ADAPTER_NAME, TrainError, TrainRun


def lora_metadata(run: TrainRun, step: int) -> dict[str, str]:
    s = run.summary
    return {
        "ufo_base_model": str(run.cfg.model.pretrained_model_name_or_path),
        "ufo_rank": str(s.rank),
        "ufo_alpha": f"{s.alpha:g}",
        "ufo_target_modules": json.dumps(s.target_modules),
        "ufo_step": str(step),
        "ufo_training_weight": "1.0",
        "ufo_config_fingerprint": run.cfg.fingerprint(),
        "ufo_clip_mode": run.cfg.data.clip_mode,
        "ufo_train_mode": run.model.applied_train_mode(run.cfg.train.train_mode),
        **expert_metadata(run),
        **({} if run.model.training_fps is None else {"ufo_train_fps": f"{run.model.training_fps:g}"}),
    }


def expert_metadata(run: TrainRun) -> dict[str, str]:
    """On a multi-expert model: the expert the LoRA is for and its timestep range (`lora inspect` shows them)."""
    if len(run.model.experts()) < 2:
        return {}
    e = run.extra["expert"]
    return {"ufo_expert": e.component, "ufo_expert_timesteps": f"{e.t_min:g}-{e.t_max:g}"}


def save_dtype(cfg) -> torch.dtype:
    """The LoRA files' dtype (train.save_dtype; the state folder keeps exact fp32 values)."""
    from ufo_video.train.run import DTYPES

    return DTYPES[cfg.train.save_dtype]


def check_disk_space(run: TrainRun, step: int) -> None:
    """Print the disk the run's checkpoints need and refuse (every process) when it is not free."""
    from ufo_video.train import disk

    out, acc = run.output_dir, run.accelerator
    error = None
    if acc.is_main_process:
        existing = len(ckpt.list_steps(out))
        plan = disk.plan_disk(run.cfg, run.params, step, run.extra["total_steps"], existing, save_dtype(run.cfg),
                              state_bytes=run.extra.get("state_bytes"))
        free, where = disk.free_bytes(out)
        print(disk.describe(plan, run.cfg, free))
        try:
            disk.check_disk(plan, run.cfg, free, where)
        except disk.DiskSpaceError as exc:
            error = exc
    flag = torch.tensor([1.0 if error else 0.0], device=acc.device)
    if float(acc.reduce(flag, reduction="sum").item()) > 0:
        raise error or disk.DiskSpaceError(f"train.output_dir={out}: not enough free disk for the checkpoints "
                                           "(see the main process's message)")


@contextlib.contextmanager
def checkpoints_named_on_full_disk(output_dir: Path) -> Iterator[None]:
    """A full disk anywhere in a run (a validation clip, the report, the config) is told with the
    checkpoint the run keeps and how to continue, unless the writer already said more."""
    try:
        yield
    except DiskFullError as exc:
        if exc.kept != exc.DEFAULT_KEPT or exc.rerun != exc.DEFAULT_RERUN:
            raise
        raise exc.with_context(*ckpt.kept_checkpoints(output_dir)) from exc.__cause__


def write_resolved_config(run: TrainRun) -> Path:
    """The exact settings of the run next to its outputs (atomic)."""
    return write_text_atomic(run.output_dir / "config.toml", config_to_toml(run.cfg))


def save_checkpoint(run: TrainRun, progress: Progress) -> Path:
    """checkpoint-{step}.safetensors, then (save_state) checkpoint-{step}/, then rotation. All processes call it.

    A full disk during the save (`DiskFullError`) leaves the folder as it was before it: the
    temporary state folder and a LoRA file this save created are removed (which also frees the
    space they took), rotation does not run, so the newest complete checkpoint stays the one
    resume picks; every process then stops with one message naming it (`_together`)."""
    from ufo_video.train import fsdp

    acc, step, out = run.accelerator, progress.step, run.output_dir
    trainable = run.trainable_state()  # every process (under FSDP a gather)
    bad = [n for n, p in trainable.items() if not torch.isfinite(p).all()]
    if bad:  # never write NaN weights
        raise TrainError(f"step {step}: LoRA weights are not finite ({bad[0]} ...); nothing saved")
    lora_path = ckpt.lora_file(out, step)
    new_lora = not lora_path.exists()
    undo = _undo_save(run, step, lora_path if new_lora else None)

    def write_lora() -> None:
        from ufo_video.lora.formats import save_lora

        save_lora(lora_path, run.model, ADAPTER_NAME, lora_metadata(run, step), dtype=save_dtype(run.cfg),
                  tensors=trainable)

    _together(run, write_lora, undo)
    if run.cfg.train.save_state:
        tmp, final = ckpt.tmp_dir(out, step), ckpt.state_dir(out, step)

        def into_state(write, *args, **kwargs) -> Callable[[], None]:
            def call() -> None:
                with disk_errors(final):  # the folder the user knows; its temporary name goes with the undo
                    write(*args, **kwargs)

            return call

        _together(run, into_state(ckpt.begin_state, out, step), undo)
        acc.wait_for_everyone()
        _together(run, into_state(ckpt.write_rng, tmp, acc.process_index), undo, everyone=True)
        engine, sharded = uses_engine_state(run), fsdp.uses_fsdp(acc)
        if engine:
            # every process writes its own optimizer shard (fp32 masters and moments) through
            # accelerate's own mechanism; the frozen base weights are not written. (DeepSpeed
            # writes with torch.save, whose full-disk error carries no errno: it stays a traceback.)
            _together(run, into_state(acc.save_state, str(tmp / ckpt.ENGINE_DIR), exclude_frozen_parameters=True),
                      undo, everyone=True)  # fmt: skip
        if sharded:  # the whole optimizer state, gathered (a collective), written by the main process
            _together(run, into_state(fsdp.save_optimizer, run.transformer, run.optimizer, tmp, acc.is_main_process),
                      undo, everyone=True)  # fmt: skip
        acc.wait_for_everyone()

        def write_main() -> None:
            ckpt.write_main_state(
                tmp, trainable=trainable, optimizer=None if engine or sharded else run.optimizer,
                lr_scheduler=run.lr_scheduler, progress=progress,
            )  # fmt: skip
            ckpt.finish_state(tmp, out, step)

        _together(run, into_state(write_main), undo)
    if acc.is_main_process:
        ckpt.rotate(out, run.cfg.train.checkpoints_total_limit)
    acc.wait_for_everyone()
    return lora_path


def _together(run: TrainRun, write, undo, everyone: bool = False) -> None:
    """Run `write` on the main process (`everyone`: on every process). When the disk is full on
    any of them, the main process undoes the partial save and every process raises at this same
    point (one flag summed over processes), so none is left waiting in a later collective."""
    acc = run.accelerator
    error = None
    if everyone or acc.is_main_process:
        try:
            write()
        except DiskFullError as exc:
            error = exc
    failed = error is not None
    if acc.num_processes > 1:
        flag = torch.tensor([1.0 if failed else 0.0], device=acc.device)
        failed = float(acc.reduce(flag, reduction="sum").item()) > 0
    if not failed:
        return
    kept = undo() if acc.is_main_process else None
    if error is None:
        raise TrainError("stopped: another process could not write the checkpoint (see its message)")
    raise error.with_context(*kept) if kept else error


def _undo_save(run: TrainRun, step: int, new_lora: Path | None):
    """What a failed save of `step` cleans up; it returns (what was kept, how to go on)."""

    def undo() -> tuple[str, str]:
        out = run.output_dir
        shutil.rmtree(ckpt.tmp_dir(out, step), ignore_errors=True)
        if new_lora is not None:
            new_lora.unlink(missing_ok=True)
        return ckpt.kept_checkpoints(out)

    return undo


def uses_engine_state(run: TrainRun) -> bool:
    """DeepSpeed keeps the optimizer state (sharded, with fp32 master weights) inside its engine:
    it is saved and restored through accelerate's save_state/load_state on every process."""
    from accelerate.utils import DistributedType

    return run.accelerator.distributed_type == DistributedType.DEEPSPEED


def _engine_name(deepspeed: bool, sharded: bool) -> str:
    return "DeepSpeed" if deepspeed else "FSDP" if sharded else "DDP / one process"


def restore(run: TrainRun, folder: Path) -> Progress:
    """Load a complete state folder into the live run (weights, optimizer, schedule, RNG)."""
    from ufo_video.train import fsdp

    engine, sharded = uses_engine_state(run), fsdp.uses_fsdp(run.accelerator)
    saved_engine, saved_sharded = (folder / ckpt.ENGINE_DIR).is_dir(), fsdp.has_state(folder)
    if (engine, sharded) != (saved_engine, saved_sharded):
        raise TrainError(
            f"{folder}: saved with {_engine_name(saved_engine, saved_sharded)}, resumed with "
            f"{_engine_name(engine, sharded)}; the optimizer state is kept differently, so resume with the same "
            "accelerate config"
        )
    state = ckpt.read_state(folder, run.accelerator.process_index)
    progress: Progress = state["progress"]
    if progress.num_processes != run.accelerator.num_processes:
        raise TrainError(
            f"{folder}: saved by a run with {progress.num_processes} process(es), resumed with "
            f"{run.accelerator.num_processes}; the data position is per process, so resume with the same count"
        )
    live = {n: p for n, p in run.transformer.named_parameters() if p.requires_grad}
    if set(live) != set(state["lora"]):
        missing = sorted(set(live) ^ set(state["lora"]))[:5]
        raise TrainError(f"{folder}: its LoRA does not match this run's (lora.rank/target_modules changed?): {missing}")
    for name, param in live.items():
        saved = state["lora"][name]
        if saved.shape != param.shape:  # a DTensor's shape is the whole tensor's
            raise TrainError(f"{folder}: {name} has shape {tuple(saved.shape)}, this run {tuple(param.shape)}")
    if sharded:  # every process keeps its shard of the LoRA and of the optimizer state
        fsdp.restore(run.transformer, run.optimizer, state["lora"], folder)
    else:
        with torch.no_grad():
            for name, param in live.items():
                param.copy_(state["lora"][name].to(param.device, param.dtype))
    if engine:
        # weights into the engine's fp32 masters, optimizer shards per process (after the copy
        # above, which only set the module's working copy)
        run.accelerator.load_state(str(folder / ckpt.ENGINE_DIR), load_module_strict=False)
    elif not sharded:
        run.optimizer.load_state_dict(state["optimizer"])
    run.lr_scheduler.load_state_dict(state["lr_scheduler"])
    from ufo_video.train.state_io import set_rng_state

    set_rng_state(state["rng"])
    if run.is_main:
        from ufo_video.train.report import settings_note

        note = settings_note(folder, progress, run.cfg)
        if note:
            print(note)
    return progress


def trim_loss_log(path: Path, step: int) -> None:
    """After a resume, drop logged losses of steps beyond the restored one (they will be redone)
    and an incomplete last line (see `loss_log`)."""
    loss_log.trim(path, step)


def append_loss(path: Path, step: int, loss: float, lr: float) -> None:
    loss_log.append(path, step, loss, lr)
