"""The training recipe: setup -> (resume) -> train loop -> save -> summary -> cleanup.

One optimizer step = `gradient_accumulation_steps` micro-batches (fewer at the end of an epoch);
the loss of each micro-batch is divided by the group's size, so every step's gradient is the mean
over its samples whatever the number of processes. The data position saved with a checkpoint is
always a group boundary, which is what makes resume exact.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ufo_video.config import UfoConfig
from ufo_video.errors import DataError
from ufo_video.process import stop
from ufo_video.train import checkpoint as ckpt
from ufo_video.train import saving
from ufo_video.train.checkpoint import Progress
from ufo_video.train.objective import clip_norm_at
from ufo_video.train.run import TrainError, TrainRun
from ufo_video.train.setup import check_inputs, make_accelerator, setup, uses_ddp
from ufo_video.train.step import batch_loss
from ufo_video.train.validation import check_validation, run_validation, validation_due

OOM_HELP = (
    "out of accelerator memory. Options, cheapest first: train.gradient_checkpointing=true, "
    "train.low_vram=true (VAE and text encoder on the GPU only while used), train.fp8_base=true "
    "(base weights stored in fp8), a smaller data.video_sample_size / data.image_sample_size or "
    "data.video_sample_n_frames, train.train_batch_size=1 with gradient_accumulation_steps instead"
)


@dataclass
class RunResult:
    steps: int
    final_loss: float | None
    lora_path: Path | None
    seconds: float
    interrupted: int | None = None  # the stop signal's number (SIGINT for a KeyboardInterrupt)
    nan_skips: int = 0
    state_saved: bool = False  # a resumable state folder exists for `steps`


def _loader(cfg: UfoConfig, acc, epoch: int, skip: int, model):
    if cfg.data.cache_latents:
        from ufo_video.data.cache import build_cached_loader as build
    else:
        from ufo_video.data.loader import build_train_loader as build

    return build(
        cfg, seed=cfg.train.seed, epoch=epoch, skip_batches=skip,
        process_index=acc.process_index, num_processes=acc.num_processes, model=model,
    )  # fmt: skip


def _hparams(cfg: UfoConfig) -> dict:
    """Flat scalar settings for the TensorBoard hparams view."""
    flat = {}
    for section in ("model", "data", "lora", "train"):
        for k, v in getattr(cfg, section).model_dump(mode="json").items():
            flat[f"{section}.{k}"] = v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
    return flat


def _any_process(run: TrainRun, flag: bool) -> bool:
    """True when `flag` is true on any process (every process must take the same branch)."""
    t = torch.tensor([1.0 if flag else 0.0], device=run.accelerator.device)
    return bool(run.accelerator.reduce(t, reduction="sum").item() > 0)


def _stop_signal(run: TrainRun) -> int | None:
    """The stop signal received since the last step (any process's: all stop at the same step)."""
    signum = stop.requested()
    if run.accelerator.num_processes > 1:
        code = torch.tensor([float(signum or 0)], device=run.accelerator.device)
        signum = int(run.accelerator.reduce(code, reduction="max").item()) or None
    return signum


def _nonfinite(run: TrainRun, progress: Progress, what: str, count: bool = True) -> None:
    """Apply nan_policy to a non-finite loss or gradient norm (before any weight changes):
    stop raises; skip drops the whole accumulation group (`count=False`: only check for stop)."""
    t = run.cfg.train
    if t.nan_policy == "stop":
        raise TrainError(
            f"step {progress.step + 1}: {what} is not finite; stopped before updating the LoRA (last saved "
            "checkpoint is intact). Try a lower learning_rate, mixed_precision=bf16 instead of fp16, or "
            "nan_policy=skip"
        )
    if not count:
        return
    progress.nan_skips += 1
    run.optimizer.zero_grad(set_to_none=True)
    if run.is_main:
        print(f"warning: step {progress.step + 1}: {what} is not finite; batch skipped ({progress.nan_skips}/{t.max_nan_skips})")
    if progress.nan_skips > t.max_nan_skips:
        raise TrainError(f"more than train.max_nan_skips={t.max_nan_skips} non-finite steps; stopping")


def optimizer_step(run: TrainRun, batches: list[dict], first_pos: int, progress: Progress) -> tuple[float, float] | None:
    """Forward/backward over one accumulation group and the update; None when the group was skipped."""
    acc, group = run.accelerator, len(batches)
    total, bad = 0.0, False
    for j, batch in enumerate(batches):
        sync = j == group - 1
        with contextlib.nullcontext() if sync else acc.no_sync(run.trained):
            loss = batch_loss(run, batch, first_pos + j)
            if _any_process(run, not torch.isfinite(loss.detach()).all().item()):
                bad = True
                _nonfinite(run, progress, "the loss", count=False)  # raises under nan_policy=stop
            acc.backward(loss / group)  # skip policy: still backward, so all processes run the same collectives
        total += float(loss.detach())
    if bad:
        _nonfinite(run, progress, "the loss")
        return None
    t = run.cfg.train
    clip = clip_norm_at(progress.step, t.max_grad_norm, t.max_grad_norm_warmup_steps, t.max_grad_norm_warmup_factor)
    grad_norm = acc.clip_grad_norm_(run.params, clip)
    if grad_norm is not None:  # None: the backend (DeepSpeed) clips by itself
        from ufo_video.train.fsdp import full

        grad_norm = float(full(grad_norm))  # FSDP2: a replicated DTensor
        if _any_process(run, not torch.isfinite(torch.tensor(grad_norm)).item()):
            _nonfinite(run, progress, "the gradient norm")
            return None
    run.optimizer.step()
    run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    mean = acc.reduce(torch.tensor([total / group], device=acc.device), reduction="mean")
    return float(mean.item()), float("nan") if grad_norm is None else grad_norm


def train(cfg: UfoConfig) -> RunResult:
    """Run a whole training from a validated config (every process of a launch calls this)."""
    from ufo_video.threads import apply_threads
    from ufo_video.train.output_lock import claim_output_dir

    model = check_inputs(cfg)  # the folder inspected once; every stage below gets this object
    started = time.perf_counter()
    out = Path(cfg.train.output_dir)
    threads = apply_threads(cfg.model.threads)
    acc = make_accelerator(cfg, out)
    from ufo_video.data.plan import sample_list_per_run
    from ufo_video.data.skips import LIST_NAME

    try:
        # the main process holds output_dir for the whole run (lock, writable, not another run's)
        claim = (claim_output_dir(out, resuming=bool(cfg.train.resume_from_checkpoint),
                                  start_over=cfg.train.overwrite_output_dir)
                 if acc.is_main_process else contextlib.nullcontext())  # fmt: skip
        skip_list = out / LIST_NAME if acc.is_main_process else None  # the run's skipped files, listed
        # metadata read, paths stat'ed, skips reported: once per run; a full disk names the kept checkpoint
        with claim as claimed, sample_list_per_run(skip_list), saving.checkpoints_named_on_full_disk(out):
            return _train(cfg, acc, out, started, threads, model, claimed)
    finally:
        acc.end_training()
        if acc.num_processes == 1:
            # the accelerate state is a process-wide singleton; resetting it lets one Python
            # process run several trainings (tests, notebooks) with different precisions
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state(reset_partial_state=True)


def _train(cfg: UfoConfig, acc, out: Path, started: float, threads: int, model, claimed=None) -> RunResult:
    from tqdm.auto import tqdm

    from ufo_video.train import report

    if acc.is_main_process:
        print(f"reading the dataset {cfg.data.train_data_meta} ...", flush=True)
    first = _loader(cfg, acc, epoch=0, skip=0, model=model)
    if len(first) == 0:
        raise DataError(
            f"{cfg.data.train_data_meta}: no full batch per process (train_batch_size={cfg.train.train_batch_size} "
            f"x {acc.num_processes} processes); add samples or lower the batch size"
        )
    if acc.is_main_process:
        print(f"loading {cfg.model.pretrained_model_name_or_path} ...", flush=True)
    probe = None
    if uses_ddp(acc):
        it = iter(first)
        probe = next(it)  # this process's first batch: tells DDP whether some LoRA gets no gradient
        it.close()
    from ufo_video.train import memory_estimate

    # before the model loads: blocks_to_swap=auto that cannot fit stops here (memory_plan.py)
    memory_lines, auto_swap = memory_estimate.before_load(cfg, acc.device, model)
    run = setup(cfg, acc, len(first), probe_batch=probe, model=model, blocks_to_swap=auto_swap)
    run.extra["memory_lines"] = memory_lines
    del probe
    check_validation(run)
    setup_seconds = time.perf_counter() - started
    if run.is_main:
        if claimed is not None:  # overwrite_output_dir: the old run goes only now that data and model are fine
            claimed.remove_previous()
        out.mkdir(parents=True, exist_ok=True)
        for stale in ckpt.remove_stale_tmp(out):
            print(f"removed incomplete checkpoint {stale.name} (a run stopped while saving)")
        saving.write_resolved_config(run)
        print("\n".join(report.start_summary(run, first, threads)))
    acc.wait_for_everyone()
    loss_log = out / "losses.jsonl"
    progress = _resume(run, out)
    if run.is_main:
        saving.trim_loss_log(loss_log, progress.step)
    saving.check_disk_space(run, progress.step)
    if run.cfg.train.report_to == "tensorboard":
        from ufo_video.train import tensorboard_log

        tensorboard_log.start(run, _hparams(cfg))  # a full disk later: one warning, training goes on

    total = run.extra["total_steps"]
    ga = cfg.train.gradient_accumulation_steps
    global_batch = cfg.train.train_batch_size * acc.num_processes
    last_saved, last_loss, interrupted, loader = progress.step, None, None, first
    bar = tqdm(total=total, initial=progress.step, disable=not run.is_main, desc="train", unit="step", dynamic_ncols=True)
    try:
        with stop.deferred():  # SIGTERM/SIGINT: the step in progress finishes, then save and exit
            while progress.step < total and not interrupted:
                run.extra["epoch"] = progress.epoch
                if not (progress.epoch == 0 and progress.batch_in_epoch == 0):
                    loader = _loader(cfg, acc, progress.epoch, progress.batch_in_epoch, model)
                batches, pos, n = iter(loader), progress.batch_in_epoch, len(loader)
                while pos < n and progress.step < total:
                    t0 = time.perf_counter()
                    group = [next(batches) for _ in range(min(ga, n - pos))]
                    result = optimizer_step(run, group, pos, progress)
                    pos += len(group)
                    progress.batch_in_epoch = pos
                    if result is None:
                        continue
                    last_loss, grad_norm = result
                    progress.step += 1
                    dt = time.perf_counter() - t0
                    lr = run.lr_scheduler.get_last_lr()[0]
                    logs = {"loss": last_loss, "lr": lr, "grad_norm": grad_norm, "step_time": dt,
                            "samples_per_s": global_batch * len(group) / dt}  # fmt: skip
                    acc.log(logs, step=progress.step)
                    if run.is_main:
                        saving.append_loss(loss_log, progress.step, last_loss, lr)
                    bar.update(1)
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")
                    if pos >= n:
                        progress.epoch, progress.batch_in_epoch = progress.epoch + 1, 0
                    interrupted = _stop_signal(run)
                    if (progress.step % cfg.train.checkpointing_steps == 0 or progress.step == total) and not interrupted:
                        saving.save_checkpoint(run, progress)
                        last_saved = progress.step
                        if run.is_main:
                            bar.write(report.checkpoint_line(run, progress.step, last_loss))
                    if interrupted:
                        break
                    if validation_due(run, progress.step):
                        run_validation(run, progress.step)
                if pos >= n and progress.batch_in_epoch != 0:
                    progress.epoch, progress.batch_in_epoch = progress.epoch + 1, 0
    except KeyboardInterrupt as exc:  # raised by code of ours, not by a signal (e.g. the demo's stop)
        interrupted = getattr(exc, "signum", signal.SIGINT)
    except torch.OutOfMemoryError:
        raise TrainError(OOM_HELP) from None
    finally:
        bar.close()
    with stop.deferred():  # a second signal cannot interrupt this save
        if interrupted and run.is_main:
            done = "its checkpoint is saved" if last_saved == progress.step else "saving a checkpoint before exiting"
            print(f"\ninterrupted at step {progress.step} ({signal.Signals(interrupted).name}); {done}", flush=True)
        if progress.step > 0 and last_saved != progress.step:
            saving.save_checkpoint(run, progress)
    stop.reset()
    lora = ckpt.lora_file(out, progress.step) if progress.step > 0 else None
    result = RunResult(progress.step, last_loss, lora, time.perf_counter() - started, interrupted, progress.nan_skips,
                       state_saved=bool(cfg.train.save_state and progress.step > 0))  # fmt: skip
    if run.is_main:
        _print_summary(result, out, getattr(loader, "failures", None))
        timings = {"total_s": round(result.seconds, 2), "setup_s (data, model, LoRA)": round(setup_seconds, 2),
                   "threads": threads}  # fmt: skip
        html = report.write_train_report(run, result, timings=timings)
        print(f"  report: {html}")
    return result


def _resume(run: TrainRun, out: Path) -> Progress:
    """The restored progress when resume_from_checkpoint is set (and a state exists), else a fresh one."""
    cfg = run.cfg
    fresh = Progress(fingerprint=cfg.fingerprint(), num_processes=run.accelerator.num_processes,
                     settings=cfg.flat_settings())
    if not cfg.train.resume_from_checkpoint:
        return fresh
    folder = ckpt.resolve_resume(cfg.train.resume_from_checkpoint, out)
    if folder is None:
        if run.is_main:
            print(f"resume_from_checkpoint=latest: no complete checkpoint in {out}; starting from step 0")
        return fresh
    progress = saving.restore(run, folder)
    progress.fingerprint, progress.settings = cfg.fingerprint(), cfg.flat_settings()
    if run.is_main:
        print(f"resumed from {folder} at step {progress.step} (epoch {progress.epoch}, batch {progress.batch_in_epoch})")
    return progress


def _print_summary(r: RunResult, out: Path, failures) -> None:
    status = "interrupted" if r.interrupted else "finished"
    loss = f"{r.final_loss:.5f}" if r.final_loss is not None else "n/a"
    print(f"\ntraining {status}: {r.steps} steps in {r.seconds:.1f} s, final loss {loss}")
    if r.nan_skips:
        print(f"  non-finite steps skipped: {r.nan_skips}")
    if failures:
        print(f"  samples that failed to load: {len(failures) if hasattr(failures, '__len__') else failures}")
    print(f"  LoRA: {r.lora_path if r.lora_path else '(no step completed, nothing saved)'}")
    print(f"  outputs (config, checkpoints, losses.jsonl, logs): {out}")
