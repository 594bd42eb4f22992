"""Training setup: accelerator, model, LoRA, memory options, optimizer and LR schedule.

Everything model-specific goes through the `ModelAdapter` (which components to load, encode_text,
encode_video, training_conditioning, predict); the trainer never names a model family.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ufo_video.config import UfoConfig
from ufo_video.errors import ConfigError, DataError
from ufo_video.train.run import ADAPTER_NAME, DTYPES, TrainRun

if TYPE_CHECKING:
    from ufo_video.models.base import ModelAdapter


def check_inputs(cfg: UfoConfig) -> "ModelAdapter":
    """Say what is expected where before anything heavy is loaded. Returns the model folder,
    inspected once (`models.registry.model_shell`: what it is, its rules, its components): the run
    passes this object to every stage (data loaders, cache, setup) instead of the path."""
    model_dir = Path(cfg.model.pretrained_model_name_or_path)
    if not model_dir.is_dir():
        raise ConfigError(
            f"model folder not found: {model_dir}. Download the model into it (README's guide lists each "
            "supported model and its folder) or point model.pretrained_model_name_or_path (MODEL_NAME for "
            "scripts/train_ufo.sh) at it; `ufo-video model make-tiny DIR` makes a tiny one to try things."
        )
    from ufo_video.models.registry import model_shell

    model = model_shell(model_dir)
    model.check_trainable(model_dir)  # a family that cannot train yet says so first
    model.resolve_training_fps(cfg.train.fps)  # train.fps on a model that takes none: refused
    check_sizes(cfg, model)
    root, meta = Path(cfg.data.train_data_dir), Path(cfg.data.train_data_meta)
    if not root.is_dir():
        raise DataError(
            f"dataset folder not found: {root}. Put the images/videos under datasets/internal_datasets/ "
            "(the guide's layout) or set data.train_data_dir (DATASET_NAME for scripts/train_ufo.sh)."
        )
    if not meta.is_file():
        raise DataError(
            f"dataset metadata not found: {meta}. Expected a JSON list of "
            '{"file_path": <relative to the dataset folder>, "text": <caption>, "type": "image"|"video"} '
            "(datasets/internal_datasets/metadata.json in the guide; DATASET_META_NAME for the script)."
        )
    return model


def _deepspeed_launch() -> bool:
    """`accelerate launch` with a DeepSpeed config (it sets this variable for every process)."""
    import os

    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def make_accelerator(cfg: UfoConfig, output_dir: Path):
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs, ProjectConfiguration

    from ufo_video.train.fsdp import fsdp_launch, uses_fsdp

    project = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / cfg.train.logging_dir))
    group = {"timeout": timedelta(seconds=cfg.train.collective_timeout_s)}
    deepspeed = _deepspeed_launch()
    if deepspeed and not torch.cuda.is_available():
        # accelerate 1.15 starts DeepSpeed only off the CPU (`cpu=True` turns it off, and without CUDA
        # it picks no backend, i.e. one process): naming gloo makes DeepSpeed's CPU accelerator run
        # (the 2-process ZeRO-2 test needs it; on GPUs nothing changes)
        group["backend"] = "gloo"
    accelerator = Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        log_with="tensorboard" if cfg.train.report_to == "tensorboard" else None,
        project_config=project,
        cpu=cfg.model.device == "cpu" and not deepspeed,
        # find_unused_parameters is decided in `setup` by looking at one real backward pass
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False), InitProcessGroupKwargs(**group)],
    )
    if fsdp_launch() and not uses_fsdp(accelerator):
        # accelerate 1.15 turns FSDP on only for several processes on accelerators; otherwise it
        # would quietly run something else
        why = ("FSDP shards the weights across processes: launch at least 2 (--num_processes), or use "
               "train.fp8_base=true and train.low_vram=true on one GPU" if accelerator.num_processes < 2 else
               f"accelerate enables FSDP on GPUs only (model.device={cfg.model.device})")
        raise ConfigError(f"an FSDP launch (accelerate config distributed_type: FSDP) on {accelerator.num_processes} "
                          f"process(es) became {accelerator.distributed_type.value} here: {why}")
    return accelerator


def configure_deepspeed(cfg: UfoConfig, accelerator) -> None:
    """Make the DeepSpeed config say what this trainer does, or refuse what it cannot honour.

    The trainer prepares no dataloader, so the micro-batch (accelerate's "auto") is set here;
    DeepSpeed clips by itself (at train.max_grad_norm, constant) and steps inside backward, so the
    clip warm-up and skipping a non-finite step cannot be honoured and are refused by name."""
    t = cfg.train
    problems = []
    if t.gradient_accumulation_steps > 1:
        problems.append("train.gradient_accumulation_steps > 1 (set gradient_accumulation_steps in the accelerate "
                        "config and keep train.gradient_accumulation_steps=1: DeepSpeed steps inside backward)")
    if t.max_grad_norm_warmup_steps > 0:
        problems.append("train.max_grad_norm_warmup_steps > 0 (DeepSpeed clips at one constant gradient_clipping; "
                        "set max_grad_norm_warmup_steps=0)")
    if t.nan_policy == "skip":
        problems.append("train.nan_policy=skip (DeepSpeed updates the weights inside backward, so a non-finite "
                        "gradient cannot be dropped; use nan_policy=stop)")
    if t.fp8_base:
        problems.append("train.fp8_base=true (DeepSpeed casts the whole module to its compute dtype)")
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2):
        problems.append(f"zero_optimization.stage={stage} (ZeRO-3 shards the weights, so the LoRA file and resume "
                        "state would hold one process's shard; use zero_stage: 2)")
    clip = ds.get("gradient_clipping", "auto")
    if clip not in ("auto", None) and float(clip) != t.max_grad_norm:
        problems.append(f"gradient_clipping={clip} in the DeepSpeed config but train.max_grad_norm={t.max_grad_norm} "
                        "(make them equal, or set gradient_clipping: auto)")
    if problems:
        raise ConfigError("DeepSpeed cannot run this config as asked: " + "; ".join(problems))
    ga = ds.get("gradient_accumulation_steps", 1)
    if ga not in ("auto", 1):
        raise ConfigError(f"DeepSpeed gradient_accumulation_steps={ga}: this trainer runs 1 (exact resume and "
                          "equal batches per process rely on it); set it to 1 in the accelerate config")
    ds["gradient_accumulation_steps"] = 1
    ds["train_micro_batch_size_per_gpu"] = t.train_batch_size
    ds["train_batch_size"] = t.train_batch_size * accelerator.num_processes
    ds["gradient_clipping"] = t.max_grad_norm


def uses_ddp(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.num_processes > 1 and accelerator.distributed_type not in (
        DistributedType.DEEPSPEED, DistributedType.FSDP, DistributedType.NO)


def unused_trainable(run: "TrainRun", batch: dict) -> list[str]:
    """Trainable parameters that get no gradient from one real forward/backward (before DDP wraps
    the model), with every RNG restored afterwards so the run is unchanged. DDP is told to look for
    unused parameters (a graph walk every step) only when this list is not empty."""
    from ufo_video.train import state_io
    from ufo_video.train.step import batch_loss

    rng = state_io.rng_state()
    epoch = run.extra.get("epoch")
    run.extra["epoch"] = 0
    try:
        with run.accelerator.autocast():
            loss = batch_loss(run, batch, 0)
        loss.backward()
        return [n for n, p in run.transformer.named_parameters() if p.requires_grad and p.grad is None]
    finally:
        for p in run.params:
            p.grad = None
        run.extra.pop("mask_kinds", None)
        if epoch is None:
            run.extra.pop("epoch", None)
        else:
            run.extra["epoch"] = epoch
        state_io.set_rng_state(rng)


def make_optimizer(cfg: UfoConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    t = cfg.train
    kwargs = dict(lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2), weight_decay=t.adam_weight_decay, eps=t.adam_epsilon)
    if t.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ConfigError(
                "train.use_8bit_adam needs bitsandbytes, which is not installed: `pip install bitsandbytes` "
                "(CUDA only), or set use_8bit_adam=false"
            ) from None
        return bnb.optim.AdamW8bit(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


def total_steps(cfg: UfoConfig, batches_per_epoch: int) -> int:
    """max_train_steps when given, else epochs x optimizer steps per epoch."""
    if cfg.train.max_train_steps is not None:
        return cfg.train.max_train_steps
    return cfg.train.num_train_epochs * math.ceil(batches_per_epoch / cfg.train.gradient_accumulation_steps)


def check_sizes(cfg: UfoConfig, shell: "ModelAdapter") -> None:
    """The data sizes and frame count against the model's own rules (its VAE and patch), from its
    configs alone: a size the model cannot take is an error naming the setting, before any loading."""
    rules, d = shell.rules, cfg.data
    problems = [
        f"data.{name}={getattr(d, name)} must be {rules.size_rule()}"
        for name in ("image_sample_size", "video_sample_size", "token_sample_size")
        if getattr(d, name) % rules.size_multiple
    ]
    if not rules.frames_ok(d.video_sample_n_frames):
        n = d.video_sample_n_frames
        problems.append(f"data.video_sample_n_frames={n} must be {rules.frame_rule()}; nearest: "
                        f"{rules.floor_frames(n)} or {rules.floor_frames(n) + rules.temporal_factor}")  # fmt: skip
    if problems:
        raise ConfigError(f"{shell.info.path} ({shell.display_name} {shell.info.variant}): " + "; ".join(problems))


def needed_components(cfg: UfoConfig, model: "ModelAdapter") -> tuple[str, ...]:
    """What this run loads, as the adapter says (`ModelAdapter.stage_components`). With the
    latent/text cache and no validation, the VAE and encoders are not loaded at all (the biggest
    memory saving the cache brings), except what the cached conditioning runs every step (e.g. the
    VAE for start-image noise redrawn per step); the text encoders never. A multi-expert model
    loads only the expert this run trains (`train.expert`)."""
    t = cfg.train
    stage = "train_cached" if cfg.data.cache_latents and t.validation_steps is None else "train"
    return model.stage_components(
        stage, mode=t.train_mode, start_image_noise=t.start_image_noise == "model", expert=t.expert)


def setup(cfg: UfoConfig, accelerator, batches_per_epoch: int, probe_batch: dict | None = None,
          model: "ModelAdapter | None" = None, blocks_to_swap: int | None = None) -> TrainRun:
    """Load the model, add the LoRA, apply memory options and build the optimizer (every process).

    `model`: the folder as `check_inputs` inspected it (inspected here when not given).
    `blocks_to_swap`: `train.blocks_to_swap = "auto"` as the memory planner resolved it.

    `probe_batch` (this process's first batch): with DDP, one forward/backward on it tells whether
    some trainable parameters get no gradient (DDP's find_unused_parameters, only then)."""
    from accelerate.utils import DistributedType
    from diffusers.optimization import get_scheduler

    from ufo_video.lora.inject import add_lora
    from ufo_video.models.memory import enable_fp8_storage
    from ufo_video.models.registry import load_model, model_shell

    from ufo_video.train.fsdp import configure_fsdp, uses_fsdp
    from ufo_video.train.offload import check_offload_settings, checkpointing_func, install_block_swap

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        configure_deepspeed(cfg, accelerator)
    fsdp = uses_fsdp(accelerator)
    if fsdp:
        configure_fsdp(cfg, accelerator)
    check_offload_settings(cfg, fsdp=fsdp, deepspeed=accelerator.distributed_type == DistributedType.DEEPSPEED)
    output_dir = Path(cfg.train.output_dir)
    weight_dtype = DTYPES[cfg.model.weight_dtype]
    if cfg.train.mixed_precision == "fp16" and weight_dtype == torch.bfloat16:
        raise ConfigError("train.mixed_precision=fp16 with model.weight_dtype=bf16: use bf16 for both, or fp16 for both")
    if cfg.train.fp8_base and weight_dtype == torch.float32:
        raise ConfigError("train.fp8_base computes in model.weight_dtype; set it to bf16 (or fp16), not fp32")
    shell = model if model is not None else model_shell(cfg.model.pretrained_model_name_or_path)
    components = needed_components(cfg, shell)
    model = load_model(shell, dtype=weight_dtype, components=components)
    model.training_fps = model.resolve_training_fps(cfg.train.fps)  # the rate its conditioning uses
    per_step = model.cache_step_components(cfg.train.train_mode, start_image_noise=cfg.train.start_image_noise == "model")
    if cfg.data.cache_latents and cfg.train.validation_steps is None and per_step and accelerator.is_main_process:
        print(f"latent cache: also loading the {' and '.join(per_step)}: with train.start_image_noise="
              f"'{cfg.train.start_image_noise}' the model's cached conditioning is rebuilt every step (fresh "
              "start-image noise on the cached given frames, then encoded); the text encoders stay unloaded")
    expert = model.select_expert(cfg.train.expert)
    model.activate_expert(expert)  # the LoRA, the optimizer and saving all work on `model.transformer`
    for module in (model.transformer, model.vae, model.text_encoder, *model.extra_components.values()):
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False)
            module.eval()
    transformer = model.transformer
    if cfg.train.fp8_base:
        # before the LoRA exists, so only base layers are stored in fp8; the LoRA stays fp32
        if cfg.train.fp8_scaled:  # the blocks' Linears, e4m3 + a scale per 64 inputs (models/fp8_scaled.py)
            from ufo_video.models.fp8_scaled import enable_fp8_scaled_storage

            enable_fp8_scaled_storage(transformer, compute_dtype=weight_dtype)
        else:
            enable_fp8_storage(transformer, compute_dtype=weight_dtype)
    torch.manual_seed(cfg.train.seed)  # LoRA initialisation is identical on every process
    summary = add_lora(model, cfg.lora, adapter_name=ADAPTER_NAME)
    params = [p for p in transformer.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()  # trainable weights in fp32 whatever the base dtype
    if cfg.train.gradient_checkpointing:
        transformer.enable_gradient_checkpointing(checkpointing_func(cfg, accelerator.is_main_process))
    transformer.train()

    device = accelerator.device
    # after the LoRA and fp8 storage, before anything moves the transformer: swapped weights stay on the host
    swaps = install_block_swap(cfg, model, transformer, device, accelerator.is_main_process, blocks_to_swap)
    if not fsdp:  # FSDP: `prepare` moves each process's shard to the GPU, never the whole model
        transformer.to(device)
    if not (cfg.train.low_vram and device.type != "cpu"):
        for module in (model.vae, model.text_encoder, *model.extra_components.values()):
            if isinstance(module, torch.nn.Module) and module is not transformer:
                module.to(device)

    optimizer = make_optimizer(cfg, params)
    steps = total_steps(cfg, batches_per_epoch)
    lr_scheduler = get_scheduler(
        cfg.train.lr_scheduler, optimizer=optimizer, num_warmup_steps=cfg.train.lr_warmup_steps, num_training_steps=steps
    )
    run = TrainRun(
        cfg=cfg, accelerator=accelerator, model=model, transformer=transformer, trained=transformer,
        optimizer=optimizer, lr_scheduler=lr_scheduler, params=params, summary=summary,
        output_dir=output_dir, weight_dtype=weight_dtype, extra={"total_steps": steps, "expert": expert, "block_swap": swaps},
    )  # fmt: skip
    if uses_ddp(accelerator) and probe_batch is not None:
        unused = unused_trainable(run, probe_batch)
        flag = torch.tensor([float(len(unused))], device=device)
        any_unused = float(accelerator.reduce(flag, reduction="sum").item()) > 0
        accelerator.ddp_handler.find_unused_parameters = any_unused
        if accelerator.is_main_process:
            print(f"DDP: {len(unused)} trainable tensors get no gradient (e.g. {unused[0]}): find_unused_parameters=true"
                  if unused else "DDP: every trainable tensor gets a gradient: find_unused_parameters=false")
    # The LR scheduler is stepped by us once per optimizer step (not prepared: accelerate would
    # step it once per process, which changes the schedule with the number of GPUs).
    run.trained, run.optimizer = accelerator.prepare(transformer, optimizer)
    if fsdp:  # FSDP2 replaced the parameters with sharded ones (the optimizer already holds them)
        from ufo_video.train.fsdp import describe_shards

        run.params = [p for p in transformer.parameters() if p.requires_grad]
        if accelerator.is_main_process:
            print(describe_shards(transformer))
    return run


