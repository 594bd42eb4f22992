"""Trainer cases: the trainer's step against a bare PyTorch step, and cached against uncached.

trainer_step: B = `train.loop`'s optimizer step (`batch_loss` from train/step.py with its
per-sample generators, random inpaint masks and conditioning, `accelerator.backward`, gradient
clipping, optimizer and LR-scheduler step, the non-finite checks); A = the same work written
as a plain PyTorch loop on the same model, LoRA parameters and batch (encode text, encode
video, encode the masked video, noise, forward, the trainer's masked flow loss, backward, clip, AdamW). The ratio is the
trainer's overhead.

cached_step: A = the uncached loss (`batch_loss`, which runs the text encoder and the VAE) and
B = the loss on a batch of the latent cache (`data/cache.py`: `build_cache` then the cached
loader's `assemble`, which reads the tensors back from disk), each followed by the identical
backward + optimizer tail. The cached loss is written here from the trainer's own pieces
(objective, `select_conditioning`) because train/step.py has no cached path yet. When the
cache layer cannot be imported, B uses the same encodings computed once in memory instead
(the "encode share" of the step), and the result says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ufo_video.bench.measure import interleave, peak_memory
from ufo_video.bench.results import CaseResult, Target
from ufo_video.bench.workspace import Workspace


@contextlib.contextmanager
def training_run(ws: Workspace, cfg) -> Iterator:
    """The trainer's own setup (accelerator, model, LoRA, optimizer) and the first batch of its
    loader; the accelerate state is reset afterwards, as `train.loop.train` does."""
    from accelerate.state import AcceleratorState

    from ufo_video.data.loader import build_train_loader
    from ufo_video.train.setup import make_accelerator, setup

    acc = make_accelerator(cfg, ws.root / "train-out")
    try:
        loader = build_train_loader(cfg, seed=cfg.train.seed, epoch=0)
        run = setup(cfg, acc, len(loader))
        run.extra["epoch"] = 0
        batch = next(iter(loader))
        yield run, batch
    finally:
        acc.end_training()
        AcceleratorState._reset_state(reset_partial_state=True)


def _train_data(ws: Workspace):
    h, w, _ = ws.preset.train_size
    return ws.dataset("train", images=2, image_side=max(h, w))


def traineroptimizer_step(run, batch):
    """`train.loop`'s optimizer step for one micro-batch (the function the training loop calls)."""
    from ufo_video.train.checkpoint import Progress
    from ufo_video.train.loop import optimizer_step

    progress = Progress(num_processes=run.accelerator.num_processes)
    return lambda: optimizer_step(run, [batch], 0, progress)


def bare_step(run, batch):
    """The same computation without the trainer: plain calls on the same objects (the loss is the
    trainer's `objective.flow_loss` with the adapter's `loss_mask`, so both sides compute one loss)."""
    from ufo_video.models.base import cast_floats
    from ufo_video.train import objective

    model = run.model
    device, dtype, t = run.accelerator.device, run.weight_dtype, run.cfg.train
    optimizer = torch.optim.AdamW(run.params, lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2),
                                  weight_decay=t.adam_weight_decay, eps=t.adam_epsilon)
    gen = torch.Generator().manual_seed(0)
    autocast = run.accelerator.autocast

    def step() -> float:
        with torch.no_grad():
            text = model.encode_text(list(batch["texts"]), device)
            pixels = batch["pixel_values"].to(device=device, dtype=dtype)
            latents = model.encode_video(pixels).float()
            # the model's own training conditioning (named tensors), one generator per sample
            cond, _ = model.training_conditioning(pixels, latents, [gen] * pixels.shape[0], "inpaint")
        sigma = torch.rand(latents.shape[0], generator=gen).to(device)
        noise = torch.randn(latents.shape, generator=gen).to(device)
        s = sigma.view(-1, 1, 1, 1, 1)
        noisy = (1 - s) * latents + s * noise
        with autocast():
            pred = model.predict(noisy.to(dtype), (sigma * 1000).to(dtype), cast_floats(text, device, dtype),
                                 {k: v.to(dtype) for k, v in cond.items()})
        # the trainer's loss (objective.flow_loss with the adapter's loss_mask), not a plain MSE
        loss = objective.flow_loss(pred, objective.flow_target(latents, noise), model.loss_mask(cond, latents))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.params, t.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def case_trainer_step(ws: Workspace) -> CaseResult:
    cfg = ws.train_config(_train_data(ws))
    with training_run(ws, cfg) as (run, batch):
        bare, trainer = bare_step(run, batch), traineroptimizer_step(run, batch)
        timing = interleave(bare, trainer, ws.rounds, ws.device, warmup=ws.warmup)
        peak_a, _ = peak_memory(bare, ws.device)
        peak_b, _ = peak_memory(trainer, ws.device)
    h, w, f = ws.preset.train_size
    return CaseResult.from_timing(
        "trainer_step", "one LoRA training step: ufo-video trainer vs bare PyTorch loop (same model, LoRA, batch)",
        "bare PyTorch step", "trainer step", timing, Target("<=", 1.05), peak_bytes_a=peak_a, peak_bytes_b=peak_b,
        details={"clip": f"{f}x{h}x{w}", "gradient_checkpointing": cfg.train.gradient_checkpointing,
                 "lora_rank": cfg.lora.rank, "trainable_parameters": run.summary.trainable},
    )  # fmt: skip


# ---------------------------------------------------------------------------------- cached


def _tail(run):
    """Backward + clip + optimizer/LR step, as the training loop does after the loss."""
    acc = run.accelerator

    def after(loss: torch.Tensor) -> float:
        acc.backward(loss)
        acc.clip_grad_norm_(run.params, run.cfg.train.max_grad_norm)
        run.optimizer.step()
        run.lr_scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return after


def _predict_loss(run, latents: torch.Tensor, text, cond: torch.Tensor | None, position: int) -> torch.Tensor:
    """The second half of `train.step.batch_loss` (noise, predict, loss) on given encodings."""
    from ufo_video.models.base import cast_floats
    from ufo_video.train import objective

    t, dtype = run.cfg.train, run.weight_dtype
    gens = [objective.sample_generator(t.seed, 0, position, j) for j in range(latents.shape[0])]
    noised = objective.noise_batch(latents, gens, t.weighting_scheme, logit_mean=t.logit_mean,
                                   logit_std=t.logit_std, shift=t.timestep_shift,
                                   grid=run.model.training_timesteps())
    with run.training_forward():
        pred = run.model.predict(noised.noisy.to(dtype), noised.timesteps.to(dtype),
                                 cast_floats(text, noised.noisy.device, dtype),
                                 {} if cond is None else {k: v.to(dtype) for k, v in cond.items()})
    return objective.flow_loss(pred, noised.target, run.model.loss_mask(cond or {}, latents))


def _cached_batch(cfg):
    """(loader, planned batch, used samples) of the real latent cache; None when the cache
    layer cannot be imported. `build_cache` encodes what the first epoch needs."""
    try:
        from ufo_video.data.cache import build_cached_loader
        from ufo_video.data.cache_build import build_cache
    except ImportError:
        return None
    build_cache(cfg, epochs=1, progress=False)
    loader = build_cached_loader(cfg, seed=cfg.train.seed, epoch=0)
    planned = loader.batches[0]
    return loader, planned, [loader.resolve(planned, slot) for slot in loader._my_slots(planned)]


def case_cached_step(ws: Workspace) -> CaseResult:
    from ufo_video.train.step import batch_loss, encode_batch

    meta = _train_data(ws)
    # cache_latents stays off in the run's config so setup loads the encoders the uncached side needs
    cfg = ws.train_config(meta, data__cache_dir=str(ws.root / "latent-cache"))
    notes: list[str] = []
    with training_run(ws, cfg) as (run, batch):
        tail = _tail(run)
        cache = _cached_batch(cfg)
        if cache is not None:
            loader, planned, used = cache

            def cached_loss() -> torch.Tensor:  # the trainer's own loss on a cached batch, read from disk
                return batch_loss(run, loader.assemble(planned, used), 0)

        else:
            text, latents, cond, _ = encode_batch(run, batch, 0)
            notes.append("data/cache.py not importable: B = the step with encodings precomputed in memory "
                         "(encode share of the uncached step), not the cache layer")

            def cached_loss() -> torch.Tensor:
                return _predict_loss(run, latents, text, cond, 0)

        def side_a() -> float:
            return tail(batch_loss(run, batch, 0))

        def side_b() -> float:
            return tail(cached_loss())

        timing = interleave(side_a, side_b, ws.rounds, ws.device, warmup=ws.warmup)
        peak_a, _ = peak_memory(side_a, ws.device)
        peak_b, _ = peak_memory(side_b, ws.device)
    notes.append("both sides: train.step.batch_loss + the same backward/optimizer tail; B includes reading the "
                 "cached tensors from disk, A excludes decoding (the loader's workers do it ahead). Peak memory "
                 "is per step with the encoders loaded on both sides (a cached run does not load them at all)")
    return CaseResult.from_timing(
        "cached_step", "training step on cached latents/text embeddings vs encoding every step",
        "uncached step", "cached step", timing, Target("<=", 0.5), peak_bytes_a=peak_a, peak_bytes_b=peak_b,
        notes=notes, details={"mode": "cache layer" if cache is not None else "precomputed"},
    )  # fmt: skip
