"""Latent and text-embedding cache: ``ufo-video data cache`` fills it, ``build_cached_loader`` reads it.

Why: encoding every clip with the VAE and every caption with the 7B text encoder at every step
costs time and memory (both encoders must sit next to the transformer). The cache encodes each
distinct clip and caption once, so training can run with the transformer alone.

What is cached (all through the ``ModelAdapter``, exactly the calls the trainer makes):
- per clip: ``encode_video(pixels)`` (the latents; with ``train.vae_latents = "sample"`` also the
  posterior std, so the trainer draws a posterior sample per step), and the adapter's per-clip conditioning
  items (``cache_conditioning_items``: e.g. an inpaint model's first-frame and first+last-frame
  inpaint latents, or an image-to-video model's first-frame latents and image embedding);
- per pixel shape: the adapter's shared items (``cache_shared_items``: e.g. the all-masked
  conditioning, which encodes a video of -1 and so does not depend on the sample);
- per caption: ``encode_text([caption])``, and ``encode_text([""])`` once.

Only deterministic conditioning can be cached (random box/span masks need each draw's pixels).
The per-sample random choice among the cached kinds stays per step in the trainer: every batch
carries every item (``batch["cond"]``) and the adapter's ``conditioning_from_cache`` picks.
Noise the pipeline adds to the given frames (``train.start_image_noise = "model"``) is drawn per
step: there the adapter's items are what it needs to redraw it (e.g. the clean first and last
frame instead of their finished latents), and the trainer loads the components the adapter names
in ``cache_step_components`` (e.g. the VAE; never the text encoders). A cache built without those
items is a miss that names them; ``data cache`` then adds just them.

Text dropout keeps its randomness: the loader drops a caption exactly as the uncached loader
does (``sampling.drop_text`` by seed, epoch and sample) and then takes the cached embedding of
``""`` or of the caption.

Random settings (``static_frame=random``, ``random_flip``, moving clips with a random start,
``random_hw_adapt`` with several sides): the cache is keyed by the *resolved* clip (see
``cache_keys``), so ``data cache`` encodes every clip the planned epochs actually use
(``--epochs``, default: the run's epochs) and each epoch keeps its own random draw. The cost is
one encode per distinct clip: once per sample for the default UFO recipe (static middle frame,
no flip, one side), up to once per sample and epoch for fully random settings.

Batch order equals ``build_train_loader``'s: ``CachedLoader`` *is* a ``TrainLoader`` (same
samples, plan, process split, skip and refill of failed samples; a decode failure recorded at
cache time is replayed). A clip or text missing from the cache is a ``DataError`` telling the
user to run ``ufo-video data cache``; it is never encoded silently with other settings. So is a
shard of the cache that is missing or truncated, found when the loader is built (before the model
loads); ``data cache`` then encodes that shard's entries again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ufo_video.config import UfoConfig
from ufo_video.data.cache_keys import Fingerprints, clip_key, item_key, media_facts, model_fingerprints, shared_key, text_key
from ufo_video.data.cache_store import CacheStore
from ufo_video.data.loader import TrainLoader
from ufo_video.data.plan import PlannedBatch
from ufo_video.data.sampling import drop_text, rng_for
from ufo_video.errors import DataError

#: the per-clip item holding the VAE posterior's std (`train.vae_latents = "sample"`)
LATENT_STD_ITEM = "latent_std"
DEFAULT_CACHE_SUBDIR = ".ufo_cache"


def cache_dir_of(cfg: UfoConfig) -> Path:
    """``data.cache_dir``, else ``<train_data_dir>/.ufo_cache``: next to the data it encodes, so
    every run on that dataset (any output_dir, any LoRA setting) shares it; keys include the
    model, so several models can share one folder. Set data.cache_dir for a read-only dataset."""
    if cfg.data.cache_dir:
        return Path(cfg.data.cache_dir)
    return Path(cfg.data.train_data_dir) / DEFAULT_CACHE_SUBDIR


def model_of(cfg: UfoConfig, model: Any = None) -> Any:
    """The run's inspected model folder: `model` when the caller passes it (a run inspects its
    folder once and hands the object on), else looked up from the config's path."""
    if model is not None:
        return model
    from ufo_video.models.registry import model_shell

    return model_shell(cfg.model.pretrained_model_name_or_path)


def cache_items(cfg: UfoConfig, model: Any = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(per-clip conditioning items, per-size shared items) the model needs for this run's
    `train.train_mode` and `train.start_image_noise`, read from the model's configs alone (no weights)."""
    shell = model_of(cfg, model)
    mode, noise = cfg.train.train_mode, cfg.train.start_image_noise == "model"
    std = (LATENT_STD_ITEM,) if cfg.train.vae_latents == "sample" else ()
    return (*std, *shell.cache_conditioning_items(mode, start_image_noise=noise)), shell.cache_shared_items(mode)


def text_names(cfg: UfoConfig, model: Any = None) -> tuple[str, ...]:
    """The names of the model's text conditioning (`ModelAdapter.text_items`), from configs alone."""
    return tuple(model_of(cfg, model).text_items)


def text_items(text_fp: str, text: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """The cache keys of one caption's text conditioning, one per name (in `names`' order)."""
    key = text_key(text_fp, text)
    return tuple(f"{key}.{name}" for name in names)


def text_kind(name: str) -> str:
    """The shard kind of a text item (`CacheStore` trims trailing zero rows of every text kind)."""
    return f"text_{name}"


class CachedLoader(TrainLoader):
    """A ``TrainLoader`` whose samples come from the cache instead of the decoders (see module doc)."""

    verify_on_init = True

    def __init__(self, cfg: UfoConfig, *, seed: int, epoch: int, skip_batches: int = 0, process_index: int = 0,
                 num_processes: int = 1, store: CacheStore | None = None,
                 items: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
                 fingerprints: Fingerprints | None = None, model: Any = None) -> None:
        model = model_of(cfg, model)
        super().__init__(cfg, seed=seed, epoch=epoch, skip_batches=skip_batches, process_index=process_index,
                         num_processes=num_processes, model=model)
        self.store = store if store is not None else CacheStore(cache_dir_of(cfg), writable=False)
        self.fp = fingerprints or model_fingerprints(cfg.model.pretrained_model_name_or_path, cfg.model.weight_dtype,
                                                     adapter=type(model))
        cond_items, self.shared_items = items if items is not None else cache_items(cfg, model)
        self.text_names = text_names(cfg, model)
        self.clip_items = ("latent", *cond_items)
        self._facts: dict[int, tuple[str, int, int]] = {}
        if self.verify_on_init:
            self._check_shards()
            self._verify_planned()

    # ------------------------------------------------------------------ keys

    def clip_key(self, batch: PlannedBatch, idx: int) -> str:
        if idx not in self._facts:  # one stat per file per epoch: a file changed since caching is a miss
            try:
                self._facts[idx] = media_facts(self.samples[idx].entry.path, Path(self.d.train_data_dir))
            except OSError as exc:
                raise DataError(f"{self.samples[idx].entry.path}: {exc.strerror or exc}") from None
        return clip_key(self.fp.video, self._facts[idx], self.samples[idx].entry.type, self._spec(batch, idx),
                        batch.bucket.frames)

    def text_of(self, idx: int) -> str:
        dropped = drop_text(self.seed, self.epoch, idx, self.d.text_drop_ratio)
        return "" if dropped else self.samples[idx].entry.text

    def _text_keys(self, idx: int) -> tuple[str, ...]:
        return text_items(self.fp.text, self.text_of(idx), self.text_names)

    def clip_ready(self, clip: str) -> bool:
        return all(self.store.has(item_key(clip, item)) for item in self.clip_items)

    def _clip_miss(self, batch: PlannedBatch, idx: int, clip: str) -> DataError:
        """The clip, or the items of it that this run needs and an earlier `data cache` did not store."""
        missing = [item for item in self.clip_items if not self.store.has(item_key(clip, item))]
        if "latent" in missing:
            return self._miss(batch, idx, "the clip")
        return self._miss(batch, idx, f"the clip's item(s) {', '.join(missing)} (which items a clip needs follows "
                                      "train.train_mode, train.vae_latents and train.start_image_noise; a cache "
                                      "built with other values lacks them)")

    def _miss(self, batch: PlannedBatch, idx: int, what: str) -> DataError:
        b = batch.bucket
        procs = f" --num-processes {self.num_processes}" if self.num_processes > 1 else ""
        return DataError(
            f"{self.samples[idx].entry.path}: {what} not in the latent cache {self.store.root} (epoch {self.epoch}, "
            f"batch {batch.number}, clip {b.frames}x{b.height}x{b.width}). Run `ufo-video data cache CONFIG{procs} "
            f"[key=value ...]` with this run's config and overrides (covering epoch {self.epoch}: --epochs "
            f"{self.epoch + 1} or more); it encodes only what is missing. Causes: the file, a model or data setting, "
            "or the number of epochs/processes changed since caching. Or set data.cache_latents=false."
        )

    def _check_shards(self) -> None:
        """Fail before anything loads if a shard the index names is missing or truncated (stat
        calls; see `CacheStore.damaged_shards`), naming it and this run's samples stored in it."""
        damaged = self.store.damaged_shards()
        if not damaged:
            return
        lost = set(self.store.keys_in(damaged))
        samples = []
        for batch in self.batches[self.skip_batches:]:
            for slot in self._my_slots(batch):
                idx = batch.indices[slot]
                clip = self.clip_key(batch, idx)
                keys = {item_key(clip, item) for item in self.clip_items} | set(self._text_keys(idx))
                path = str(self.samples[idx].entry.path)
                if keys & lost and path not in samples:
                    samples.append(path)
        raise DataError(self.store.damage_message(damaged, samples))

    def _verify_planned(self) -> None:
        """Fail at epoch start, not mid-epoch: every first-choice clip and text of this process must
        be cached (replacements of failed samples are checked when they are drawn)."""
        for batch in self.batches[self.skip_batches:]:
            for slot in self._my_slots(batch):
                idx = batch.indices[slot]
                clip = self.clip_key(batch, idx)
                if not self.clip_ready(clip) and clip not in self.store.failures:
                    raise self._clip_miss(batch, idx, clip)
                if not all(self.store.has(k) for k in self._text_keys(idx)):
                    raise self._miss(batch, idx, "the caption's text embedding")

    # ------------------------------------------------------------------ one slot

    def status(self, batch: PlannedBatch, idx: int) -> str | None:
        """None when the clip is usable, else the recorded failure reason (a miss raises)."""
        clip = self.clip_key(batch, idx)
        if self.clip_ready(clip):
            return None
        if clip in self.store.failures:
            return self.store.failures[clip]
        raise self._clip_miss(batch, idx, clip)

    def resolve(self, batch: PlannedBatch, slot: int) -> int:
        """The sample that fills ``slot``: the planned one, or its replacement after failures,
        chosen exactly as ``TrainLoader._collect`` chooses it (same generator, same order)."""
        idx, tried = batch.indices[slot], set()
        rng = rng_for(self.seed, self.epoch, batch.number * 1_000_003 + slot, "refill")
        while True:
            self.decode_attempts += 1
            reason = self.status(batch, idx)
            if reason is None:
                return idx
            tried.add(idx)
            self._record_failure(idx, reason)
            idx = self._replacement(batch, slot, rng, tried)

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[dict]:
        for batch in self.batches[self.skip_batches:]:
            used = [self.resolve(batch, slot) for slot in self._my_slots(batch)]
            yield self.assemble(batch, used)
        self._check_failures(self.decode_failures, self.decode_attempts, "to decode", final=True)

    def assemble(self, batch: PlannedBatch, used: list[int]) -> dict:
        get = self.store.get
        b = batch.bucket
        clips = [self.clip_key(batch, i) for i in used]
        texts = [self.text_of(i) for i in used]
        text_keys = [self._text_keys(i) for i in used]
        for i, keys in zip(used, text_keys):
            if not all(self.store.has(k) for k in keys):
                raise self._miss(batch, i, "the caption's text embedding")
        out = {
            "latents": torch.stack([get(item_key(c, "latent")) for c in clips]),
            "text": {name: torch.stack([get(keys[j]) for keys in text_keys]) for j, name in enumerate(self.text_names)},
            "cond": {},
            "texts": texts,
            "indices": used,
            "is_static": torch.tensor([self.samples[i].moving is None for i in used], dtype=torch.bool),
            "pixel_shape": (b.frames, b.height, b.width),
        }
        for item in self.shared_items:
            key = shared_key(self.fp.video, item, b.frames, b.height, b.width)
            if not self.store.has(key):
                raise self._miss(batch, used[0], f"the shared conditioning '{item}' of this clip size")
            shared = get(key)
            out["cond"][item] = shared.unsqueeze(0).expand(len(used), *shared.shape)  # a view: one copy in memory
        for item in self.clip_items[1:]:
            stacked = torch.stack([get(item_key(c, item)) for c in clips])
            if item == LATENT_STD_ITEM:
                out["latents_std"] = stacked
            else:
                out["cond"][item] = stacked
        return out


def build_cached_loader(cfg: UfoConfig, *, seed: int, epoch: int, skip_batches: int = 0, process_index: int = 0,
                        num_processes: int = 1, model: Any = None) -> CachedLoader:
    """Like ``build_train_loader`` (same arguments, same batch order), yielding cached tensors:

    - ``latents`` [B, C, f, h, w]: ``encode_video`` output (dtype model.weight_dtype);
    - ``latents_std`` (with ``train.vae_latents = "sample"``): the posterior std, same shape;
    - ``text``: ``encode_text``'s named tensors (``text_items``) of each (possibly dropped) caption, [B, ...];
    - ``cond``: the adapter's cached conditioning items -> [B, ...] (shared items are expanded
      views of one tensor); the adapter's ``conditioning_from_cache`` picks per sample;
    - ``texts``, ``indices``, ``is_static`` as ``build_train_loader``; ``pixel_shape`` (F, H, W).
    """
    return CachedLoader(cfg, seed=seed, epoch=epoch, skip_batches=skip_batches, process_index=process_index,
                        num_processes=num_processes, model=model)
