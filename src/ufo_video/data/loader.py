"""The trainer's data loader: ``build_train_loader(cfg, seed=, epoch=, ...) -> TrainLoader``.

Contract (the trainer codes against it):
- ``len(loader)``: batches per epoch for this process (the full epoch; independent of
  ``skip_batches``, which only makes iteration start later).
- Each batch: ``pixel_values`` float32 [B, 3, F, H, W] in [-1, 1], one bucket size and frame
  count per batch; ``texts`` (after caption dropout); ``indices`` (metadata indices);
  ``is_static`` bool [B] (True for static clips: every sample with clip_mode=static, image
  samples with clip_mode=video).
- Global batches of ``train_batch_size * num_processes`` are planned for (seed, epoch); process
  i takes slots [i*B, (i+1)*B) of each. One process with batch B*N therefore sees exactly the
  batches N processes with batch B see together. ``skip_batches`` skips without decoding.
- A sample that fails to decode (error, crash or timeout of its worker) is reported once per run
  with its path and reason (``skips.py``: the first few printed, the rest counted and listed),
  appended to ``loader.failures`` and replaced by another sample of the same
  bucket drawn from a generator seeded by (seed, epoch, batch, slot): the replacement depends
  on nothing else. Once failures / attempts exceeds ``data.max_failed_fraction`` (checked from
  20 attempts on, and on the complete count after probing) a ``DataError`` stops the run.

``loader.notices``: (path, message) for videos skipped or adjusted by
``data.short_video_policy`` / fps resampling (logged once each; not failures).

Workers: ``data.dataloader_num_workers`` child processes (see ``workers.py``) decode with
``data.decode_timeout`` per sample, two batches ahead. They are started once per process and
reused by the next epoch's loader (``workers.shared_pool``), and header probes are memoised by
path, inode, size and mtime, so an epoch after the first costs decoding only. Inside
``plan.sample_list_per_run()`` (the trainer's run) the sample list itself is built once: a later
epoch's loader reads no metadata and stats no file. 0 decodes in the
training process: no crash isolation and no timeout (debugging only).

Memory of static clips: workers return ONE frame per sample; the batch is the stack of those
frames, ``expand``-ed along F (a view, stride 0). It is materialised only when the trainer
copies it (``.to(device)`` / ``.contiguous()``, where the VAE needs real memory anyway).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ufo_video.config import UfoConfig
from ufo_video.data import media, skips
from ufo_video.data.plan import (PlannedBatch, Sample, collector_paused, data_rules, describe_buckets, group_members,
                                 limits_of, plan_batches, run_samples)
from ufo_video.data.sampling import do_flip, drop_text, frame_indices, rng_for, static_frame_index
from ufo_video.data.workers import PoolLease, shared_pool
from ufo_video.errors import DataError

log = logging.getLogger("ufo_video.data")

MIN_ATTEMPTS_FOR_FAILURE_CHECK = 20
PREFETCH_BATCHES = 2


class TrainLoader:
    """Iterable over this process's batches of one epoch (see module doc)."""

    def __init__(self, cfg: UfoConfig, *, seed: int, epoch: int, skip_batches: int = 0,
                 process_index: int = 0, num_processes: int = 1, model: Any = None) -> None:
        if not 0 <= process_index < num_processes:
            raise DataError(f"process_index {process_index} is not in [0, {num_processes})")
        self.cfg, self.d = cfg, cfg.data
        self.seed, self.epoch, self.skip_batches = seed, epoch, max(0, skip_batches)
        self.batch_size = cfg.train.train_batch_size
        self.process_index, self.num_processes = process_index, num_processes
        self.workers = self.d.dataloader_num_workers
        # `model`: the run's inspected model folder (its size rules); looked up when not given
        self.rules = model.rules if model is not None else data_rules(cfg.model.pretrained_model_name_or_path)
        with collector_paused():
            n_entries, self.samples, failures, self.notices = run_samples(self.d, self.workers, self.rules)
        self.failures = [(p, r.removeprefix(f"{p}: ")) for p, r in failures]
        self._skips = skips.current()
        if process_index == 0:  # the header check is the same on every process: reported once
            self._skips.report(self.failures)
        self._check_failures(len(self.failures), n_entries, "their header check", final=True)
        self.decode_attempts = self.decode_failures = 0
        if not self.samples:
            raise DataError(f"{self.d.train_data_meta}: no usable sample ({len(self.failures)} failed, "
                            f"{len(self.notices)} skipped by policy); run `ufo-video data check` on it")
        with collector_paused():
            self.batches: list[PlannedBatch] = plan_batches(self.samples, self.d, self.batch_size * num_processes,
                                                            seed, epoch, self.rules)
        self._groups = group_members(self.samples)
        self._bad: set[int] = set()
        log.info("data: %d samples, %d batches per epoch, buckets %s", len(self.samples), len(self.batches),
                 describe_buckets(self.batches))

    def __len__(self) -> int:
        return len(self.batches)

    # ------------------------------------------------------------------ failures

    def _check_failures(self, failed: int, attempts: int, what: str, final: bool = False) -> None:
        if failed == 0 or not (final or attempts >= MIN_ATTEMPTS_FOR_FAILURE_CHECK):
            return
        if failed / max(1, attempts) > self.d.max_failed_fraction:
            shown = "; ".join(f"{p}: {r}" for p, r in self.failures[-3:])
            listed = f" (all listed in {self._skips.list_file})" if self._skips.list_file is not None else ""
            raise DataError(
                f"{failed} of {attempts} samples failed {what} ({failed / attempts:.1%} > "
                f"data.max_failed_fraction={self.d.max_failed_fraction:g}). Last: {shown}{listed}. "
                "Run `ufo-video data check` on the metadata and fix or remove these entries."
            )

    def _record_failure(self, idx: int, reason: str) -> None:
        path = str(self.samples[idx].entry.path)
        reason = reason.removeprefix(f"{path}: ")
        self._bad.add(idx)
        self.failures.append((path, reason))
        self._skips.report([(path, reason)])
        self.decode_failures += 1
        self._check_failures(self.decode_failures, self.decode_attempts, "to decode")

    # ------------------------------------------------------------------ one sample

    def _spec(self, batch: PlannedBatch, idx: int) -> dict:
        s: Sample = self.samples[idx]
        b = batch.bucket
        spec = {"size": (b.height, b.width), "flip": do_flip(self.seed, self.epoch, idx, self.d.random_flip)}
        if s.moving is not None:
            spec["indices"] = frame_indices(s.info.frames, b.frames, s.moving.step, self.seed, self.epoch, idx)
        elif s.entry.type == "video":
            spec["static_index"] = static_frame_index(s.info.frames, self.d.static_frame, self.seed, self.epoch, idx)
        return spec

    def _submit(self, pool: PoolLease, batch: PlannedBatch, slot: int, idx: int, attempt: int) -> None:
        e = self.samples[idx].entry
        pool.submit((batch.number, slot, attempt), media.task_sample, str(e.path), e.type, limits_of(self.d),
                    self._spec(batch, idx))

    def _my_slots(self, batch: PlannedBatch) -> range:
        return range(self.process_index * self.batch_size, (self.process_index + 1) * self.batch_size)

    def _replacement(self, batch: PlannedBatch, slot: int, rng: np.random.Generator, tried: set[int]) -> int:
        members = self._groups[self.samples[batch.indices[slot]].group]
        in_batch = set(batch.indices)
        order = rng.permutation(members)
        for pool_filter in (lambda i: i not in in_batch, lambda i: True):
            for cand in order:
                cand = int(cand)
                if cand not in tried and cand not in self._bad and pool_filter(cand):
                    return cand
        raise DataError(f"every sample of the bucket of {self.samples[batch.indices[slot]].entry.path} failed to "
                        "load; run `ufo-video data check`")

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[dict]:
        todo = self.batches[self.skip_batches:]
        with shared_pool(self.workers, self.d.decode_timeout) as pool:
            for ahead in todo[:PREFETCH_BATCHES]:
                self._submit_batch(pool, ahead)
            for pos, batch in enumerate(todo):
                if pos + PREFETCH_BATCHES < len(todo):
                    self._submit_batch(pool, todo[pos + PREFETCH_BATCHES])
                yield self._collect(pool, batch)
        self._check_failures(self.decode_failures, self.decode_attempts, "to decode", final=True)

    def _submit_batch(self, pool: PoolLease, batch: PlannedBatch) -> None:
        for slot in self._my_slots(batch):
            self._submit(pool, batch, slot, batch.indices[slot], 0)

    def _collect(self, pool: PoolLease, batch: PlannedBatch) -> dict:
        frames, used = [], []
        for slot in self._my_slots(batch):
            idx, attempt, tried, rng = batch.indices[slot], 0, set(), None
            while True:
                self.decode_attempts += 1
                out = pool.result((batch.number, slot, attempt))
                if out.ok:
                    break
                tried.add(idx)
                self._record_failure(idx, out.reason)
                # known-bad samples are excluded without decoding: they would fail again, so the
                # chosen replacement is the same whether or not this process saw them fail before.
                if rng is None:  # made on the first failure only: it depends on nothing but these numbers
                    rng = rng_for(self.seed, self.epoch, batch.number * 1_000_003 + slot, "refill")
                idx, attempt = self._replacement(batch, slot, rng, tried), attempt + 1
                self._submit(pool, batch, slot, idx, attempt)
            frames.append(torch.from_numpy(out.value))
            used.append(idx)
        return self._assemble(batch, frames, used)

    def _assemble(self, batch: PlannedBatch, frames: list[torch.Tensor], used: list[int]) -> dict:
        # uint8 [F', H, W, 3] -> float [3, F', H, W] in [-1, 1]: each sample is cast straight into
        # one float buffer (no uint8 stack), then one in-place conversion over the batch. The
        # result is bitwise the former stack().float().div_(127.5).sub_(1), same strides too
        # (channels innermost; the trainer's copy to the device makes it contiguous anyway).
        clips = torch.empty((len(frames), *frames[0].shape), dtype=torch.float32)
        for i, f in enumerate(frames):
            clips[i].copy_(f)
        clips = clips.div_(127.5).sub_(1.0).permute(0, 4, 1, 2, 3)
        static = [self.samples[i].moving is None for i in used]
        if batch.static:
            clips = clips.expand(-1, -1, batch.bucket.frames, -1, -1)  # view: one frame in memory per sample
        texts = ["" if drop_text(self.seed, self.epoch, i, self.d.text_drop_ratio) else self.samples[i].entry.text
                 for i in used]
        return {"pixel_values": clips, "texts": texts, "indices": used,
                "is_static": torch.tensor(static, dtype=torch.bool)}


def build_train_loader(cfg: UfoConfig, *, seed: int, epoch: int, skip_batches: int = 0,
                       process_index: int = 0, num_processes: int = 1, model: Any = None) -> TrainLoader:
    """The one entry point the trainer uses (see module doc for the contract); `model` is the
    run's inspected model folder (`models.registry.model_shell`)."""
    return TrainLoader(cfg, seed=seed, epoch=epoch, skip_batches=skip_batches,
                       process_index=process_index, num_processes=num_processes, model=model)
