"""``ufo-video data cache``: encode what the planned epochs need and is not cached yet.

The walk is ``CachedLoader``'s, once per (epoch, process): the same plan, the same refill of
failed samples, so the cache holds exactly the clips the trainer will ask for. A missing clip is
decoded in the isolated decode workers (time limit, crash isolation) and encoded; a decode
failure is recorded, so the trainer replays it and picks the same replacement. Failures recorded
by an earlier run are retried once per run (a timeout may have been transient).

Memory: captions are encoded first with the text encoder alone, then the text encoder is freed
and the VAE is loaded (only if some clip is missing), so the two never share the device.
"""

from __future__ import annotations

import gc
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ufo_video.atomic import DiskFullError
from ufo_video.config import UfoConfig
from ufo_video.data import media
from ufo_video.data.cache import (LATENT_STD_ITEM, CachedLoader, cache_dir_of, cache_items, model_of, text_items,
                                  text_kind, text_names)
from ufo_video.data.cache_keys import Fingerprints, item_key, model_fingerprints, shared_key
from ufo_video.data.cache_store import CacheStore
from ufo_video.data.plan import PlannedBatch, limits_of, sample_list_per_run
from ufo_video.data.skips import SHOWN, more_line
from ufo_video.data.workers import IsolatedPool
from ufo_video.errors import DataError

log = logging.getLogger("ufo_video.data")

PREFETCH_BATCHES = 2
TEXT_BATCH = 8
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class CacheReport:
    cache_dir: str
    epochs: int
    num_processes: int
    clips_used: int = 0
    clips_encoded: int = 0
    texts_used: int = 0
    texts_encoded: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    pruned_items: int = 0
    pruned_files: int = 0
    dropped: dict[str, tuple[str, int]] = field(default_factory=dict)  # damaged shard -> (why, entries)

    def format(self) -> str:
        lines = [f"latent cache {self.cache_dir}: {self.epochs} epoch(s) x {self.num_processes} process(es)"]
        lines += [f"  shard {name} {why}: dropped its {n} entries; those this run uses are encoded again"
                  for name, (why, n) in self.dropped.items()]  # fmt: skip
        lines += [
            f"  clips: {self.clips_used} used, {self.clips_encoded} encoded now, {self.clips_used - self.clips_encoded} already cached",
            f"  texts: {self.texts_used} used, {self.texts_encoded} encoded now",
        ]
        if self.failures:
            lines.append(f"  samples that failed to decode (skipped and replaced, as in training): {len(self.failures)}")
            failed = sorted(self.failures.items())
            lines += [f"    {p}: {r}" for p, r in failed[:SHOWN]]
            if len(failed) > SHOWN:
                lines.append("    " + more_line(len(failed) - SHOWN, (r for _, r in failed[SHOWN:]),
                                                "`ufo-video data check` lists all"))
        if self.pruned_items or self.pruned_files:
            lines.append(f"  pruned: {self.pruned_items} stale entries, {self.pruned_files} files deleted")
        return "\n".join(lines)


class ClipEncoder:
    """The VAE side of the model adapter (plus the encoders its conditioning needs), loaded on
    first use (a fully cached run loads nothing)."""

    def __init__(self, cfg: UfoConfig, model: Any) -> None:
        self.cfg, self.shell = cfg, model
        self.dtype = DTYPES[cfg.model.weight_dtype]
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from ufo_video.models.memory import resolve_device
            from ufo_video.models.registry import load_model

            self.device = resolve_device(self.cfg.model.device)
            wanted = self.shell.stage_components("cache_video", mode=self.cfg.train.train_mode)
            self._model = load_model(self.shell, dtype=self.dtype, components=wanted)
            for name in wanted:
                module = self._model.component(name)
                if isinstance(module, torch.nn.Module):
                    module.requires_grad_(False).eval().to(self.device)
        return self._model

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor, items: list[str]) -> dict[str, torch.Tensor]:
        """Tensors named by item for one clip [1, 3, F, H, W], cast exactly as the trainer casts."""
        m = self.model
        pixels = pixels.to(device=self.device, dtype=self.dtype)
        out = {}
        if LATENT_STD_ITEM in items:  # the posterior's mean (= encode_video's latents) and std
            mean, std = m.encode_video_posterior(pixels)
            out["latent"], out[LATENT_STD_ITEM] = mean[0], std[0]
        elif "latent" in items:
            out["latent"] = m.encode_video(pixels)[0]
        cond_items = tuple(i for i in items if i not in ("latent", LATENT_STD_ITEM))
        if cond_items:
            out.update(m.encode_cache_conditioning(pixels, cond_items))
        return out

    @torch.no_grad()
    def shared(self, item: str, frames: int, height: int, width: int) -> torch.Tensor:
        """A conditioning tensor that depends only on the clip size (see `cache_shared_items`)."""
        return self.model.encode_cache_shared(item, frames, height, width)

    def release(self) -> None:
        self._model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@dataclass
class _Session:
    """State shared by the walks of one ``data cache`` run."""

    store: CacheStore
    encoder: ClipEncoder
    fp: Fingerprints
    items: tuple[tuple[str, ...], tuple[str, ...]]
    model: Any  # the model folder, inspected once for the whole `data cache` run
    retried: set[str] = field(default_factory=set)
    used: set[str] = field(default_factory=set)  # item keys the planned epochs need (for --prune)
    clips: set[str] = field(default_factory=set)
    failed_clips: set[str] = field(default_factory=set)  # replayed by the trainer, so kept by --prune
    encoded: int = 0
    failures: dict[str, str] = field(default_factory=dict)


class _Filler(CachedLoader):
    """``CachedLoader``'s walk where a missing clip is decoded and encoded instead of an error."""

    verify_on_init = False

    def __init__(self, cfg: UfoConfig, session: _Session, *, epoch: int, process_index: int, num_processes: int):
        super().__init__(cfg, seed=cfg.train.seed, epoch=epoch, process_index=process_index,
                         num_processes=num_processes, store=session.store, items=session.items,
                         fingerprints=session.fp, model=session.model)
        self.session = session
        self._pool: IsolatedPool | None = None
        self._submitted: set[str] = set()

    def _needs_decode(self, clip: str) -> bool:
        if self.clip_ready(clip):
            return False
        return clip not in self.store.failures or clip not in self.session.retried

    def _submit_clip(self, batch: PlannedBatch, idx: int, clip: str) -> None:
        e = self.samples[idx].entry
        self._pool.submit(clip, media.task_sample, str(e.path), e.type, limits_of(self.d), self._spec(batch, idx))
        self._submitted.add(clip)

    def _prefetch(self, batch: PlannedBatch) -> None:
        for slot in self._my_slots(batch):
            idx = batch.indices[slot]
            clip = self.clip_key(batch, idx)
            if clip not in self._submitted and self._needs_decode(clip):
                self._submit_clip(batch, idx, clip)

    def status(self, batch: PlannedBatch, idx: int) -> str | None:
        clip = self.clip_key(batch, idx)
        if not self._needs_decode(clip):
            if self.clip_ready(clip):
                return None
            self.session.failed_clips.add(clip)
            return self.store.failures[clip]
        if clip not in self._submitted:
            self._submit_clip(batch, idx, clip)
        out = self._pool.result(clip)
        self._submitted.discard(clip)
        self.session.retried.add(clip)
        if not out.ok:
            self.store.record_failure(clip, out.reason)
            self.session.failed_clips.add(clip)
            return out.reason
        self.store.failures.pop(clip, None)
        pixels = self._assemble(batch, [torch.from_numpy(out.value)], [idx])["pixel_values"]
        missing = [item for item in self.clip_items if not self.store.has(item_key(clip, item))]
        for item, tensor in self.session.encoder.encode(pixels, missing).items():
            self.store.put(item_key(clip, item), item.split("_")[0], tensor)
        self.session.encoded += 1
        return None

    def fill(self, tick) -> None:
        s = self.session
        with IsolatedPool(self.workers, self.d.decode_timeout) as pool:
            self._pool = pool
            for pos, batch in enumerate(self.batches):
                for ahead in self.batches[pos : pos + PREFETCH_BATCHES + 1]:
                    self._prefetch(ahead)
                used = [self.resolve(batch, slot) for slot in self._my_slots(batch)]
                for idx in used:
                    clip = self.clip_key(batch, idx)
                    s.clips.add(clip)
                    s.used.update(item_key(clip, item) for item in self.clip_items)
                b = batch.bucket
                for item in self.shared_items:
                    key = shared_key(self.fp.video, item, b.frames, b.height, b.width)
                    if not self.store.has(key):
                        self.store.put(key, "cond", s.encoder.shared(item, b.frames, b.height, b.width))
                    s.used.add(key)
                tick(len(used))
        self._check_failures(self.decode_failures, self.decode_attempts, "to decode", final=True)
        for path, reason in self.failures:
            s.failures.setdefault(path, reason)


def planned_epochs(cfg: UfoConfig, batches_per_epoch: int) -> int:
    """Epochs the trainer will start: train.max_train_steps when set, else train.num_train_epochs."""
    t = cfg.train
    if t.max_train_steps is None or batches_per_epoch == 0:
        return t.num_train_epochs
    steps_per_epoch = math.ceil(batches_per_epoch / t.gradient_accumulation_steps)
    return math.ceil(t.max_train_steps / steps_per_epoch)


@torch.no_grad()
def _encode_texts(cfg: UfoConfig, store: CacheStore, fp: Fingerprints, texts: list[str], tick, shell: Any) -> int:
    names = text_names(cfg, shell)
    missing = [t for t in texts if not all(store.has(k) for k in text_items(fp.text, t, names))]
    if not missing:
        return 0
    from ufo_video.models.memory import resolve_device
    from ufo_video.models.registry import load_model

    device = resolve_device(cfg.model.device)
    wanted = shell.stage_components("cache_text")
    model = load_model(shell, dtype=DTYPES[cfg.model.weight_dtype], components=wanted)
    for name in wanted:
        module = model.component(name)
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False).eval().to(device)
    for start in range(0, len(missing), TEXT_BATCH):
        chunk = missing[start : start + TEXT_BATCH]
        enc = model.encode_text(chunk, device)
        for i, text in enumerate(chunk):
            for key, name in zip(text_items(fp.text, text, names), names):
                store.put(key, text_kind(name), enc[name][i])
        tick(len(chunk))
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return len(missing)


def build_cache(cfg: UfoConfig, *, epochs: int | None = None, num_processes: int = 1, prune: bool = False,
                progress: bool = True) -> CacheReport:
    """Fill ``cache_dir_of(cfg)`` for ``epochs`` epochs (default ``planned_epochs``) of a run on
    ``num_processes`` processes; ``prune`` then drops what this run does not use."""
    from tqdm.auto import tqdm

    if num_processes < 1:
        raise DataError(f"--num-processes must be at least 1, got {num_processes}")
    store = CacheStore(cache_dir_of(cfg), writable=True)
    model = model_of(cfg)  # the model folder, inspected once for the whole run
    fp = model_fingerprints(cfg.model.pretrained_model_name_or_path, cfg.model.weight_dtype, adapter=type(model))
    session = _Session(store, ClipEncoder(cfg, model), fp, cache_items(cfg, model), model)
    # like the trainer's run: the sample list is built once and a skipped file reported once,
    # however many (epoch, process) walks meet it
    with store.locked(), sample_list_per_run():
        dropped = store.drop_damaged()  # a missing or truncated shard: its entries are encoded again
        for name, (why, n) in dropped.items():
            log.warning("latent cache: shard %s %s; its %d entries are encoded again", name, why, n)
        first = _Filler(cfg, session, epoch=0, process_index=0, num_processes=num_processes)
        n_epochs = planned_epochs(cfg, len(first)) if epochs is None else epochs
        if n_epochs < 1:
            raise DataError(f"--epochs must be at least 1, got {n_epochs}")
        report = CacheReport(str(store.root), n_epochs, num_processes, dropped=dropped)
        texts = sorted({""} | {s.entry.text for s in first.samples.values()})
        try:
            with tqdm(total=len(texts), desc="cache texts", unit="text", disable=not progress) as bar:
                report.texts_encoded = _encode_texts(cfg, store, fp, texts, bar.update, model)
            report.texts_used = len(texts)
            session.used.update(k for t in texts for k in text_items(fp.text, t, text_names(cfg, model)))
            total = n_epochs * len(first) * cfg.train.train_batch_size * num_processes
            with tqdm(total=total, desc="cache clips", unit="clip", disable=not progress) as bar:
                for epoch in range(n_epochs):
                    for p in range(num_processes):
                        walk = first if (epoch, p) == (0, 0) else _Filler(
                            cfg, session, epoch=epoch, process_index=p, num_processes=num_processes)
                        walk.fill(bar.update)
                        bar.set_postfix(encoded=session.encoded)
            store.flush()
        except DiskFullError as exc:
            store.keep_written()  # not `flush`: the buffered tensors would hit the full disk again
            raise exc.with_context(f"the cache {store.root} keeps every shard written before (its index names only "
                                   "complete shards)", "rerun `ufo-video data cache`: it encodes only what is missing")
        except BaseException:
            store.flush()  # keep what was encoded, also on an interruption or an error
            raise
        finally:
            session.encoder.release()
        report.clips_used, report.clips_encoded, report.failures = len(session.clips), session.encoded, session.failures
        if prune:
            report.pruned_items, report.pruned_files = store.prune(session.used | session.failed_clips)
    return report
