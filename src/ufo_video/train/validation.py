"""Validation clips during training: the same transformer, the LoRA at each validation weight.

UFO is trained at weight 1.0 and used at ~0.15, so each prompt is rendered at every weight of
`train.validation_weights` by changing the adapter's scale (no copies, no reload). Errors are
not swallowed: a validation that fails stops the run with its real error. With several processes
the (prompt, weight) pairs are split across them (see `run_validation`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ufo_video.media_write import write_video
from ufo_video.train.run import ADAPTER_NAME, TrainRun, on_device


def validation_task(cfg, model) -> tuple[str, dict]:
    """Text-to-video when the model can; else image-to-video from `infer.validation_image_start`
    (an image-only model cannot render a prompt alone). Checked before training starts."""
    if "t2v" in model.tasks:
        return "t2v", {}
    from ufo_video.errors import ConfigError
    from ufo_video.infer.outputs import load_image

    image = cfg.infer.validation_image_start
    if not image:
        raise ConfigError(
            f"train.validation_steps: {model.info.path} makes video from a start image only; set "
            "infer.validation_image_start to an image file for the validation clips"
        )
    start = load_image(image, "infer.validation_image_start")
    size = (cfg.data.video_sample_size, cfg.data.video_sample_size)
    return "i2v", model.pipeline_inputs("i2v", start, None, cfg.data.video_sample_n_frames, size)


def check_validation(run: TrainRun) -> None:
    """What validation needs, checked before step 1 (never after an hour of training)."""
    t = run.cfg.train
    if not (t.validation_steps and t.validation_prompts):
        return
    experts = run.model.experts()
    if len(experts) > 1:
        from ufo_video.errors import ConfigError

        raise ConfigError(
            "train.validation_steps: validation renders with every expert, but this run trains one expert of a "
            f"{len(experts)}-expert model and loads only it; leave validation off and compare checkpoints with "
            "`ufo-video sweep` after both experts' runs"
        )
    validation_task(run.cfg, run.model)
    validation_defaults(run, "t2v" if "t2v" in run.model.tasks else "i2v")  # e.g. a step count a distilled model refuses


def validation_fps(run: TrainRun) -> float:
    """The clips' frame rate: the one the model trains at where it conditions on one (`train.fps`),
    else `infer.fps`; the rate written into the file and the rate the pipeline is told."""
    return getattr(run.model, "training_fps", None) or run.cfg.infer.fps


def validation_defaults(run: TrainRun, task: str) -> dict:
    """The family's per-call pipeline arguments (`ModelAdapter.pipeline_defaults`), as `generate`
    passes them, so a validation clip is made as the same settings would make it with `generate`."""
    i = run.cfg.infer
    return run.model.pipeline_defaults(task, steps=i.num_inference_steps, guidance_scale=i.guidance_scale,
                                       fps=validation_fps(run))


def validation_due(run: TrainRun, step: int) -> bool:
    t = run.cfg.train
    return bool(t.validation_steps and t.validation_prompts and step % t.validation_steps == 0)


def my_jobs(n_prompts: int, weights: list[float], rank: int, world: int,
            equal: bool = False) -> list[tuple[int, float, bool]]:
    """(prompt index, weight, keep) jobs this process renders: every prompt x weight, dealt
    round-robin, so with N processes each renders about 1/N of them and no process waits for all.
    `equal` (sharded weights, where every forward is a collective): every process renders the same
    number of clips; a process short of real jobs repeats the first one and discards it (keep=False)."""
    jobs = [(i, w) for i in range(n_prompts) for w in weights]
    mine = [(i, w, True) for i, w in jobs[rank::world]]
    if equal and jobs:
        rounds = -(-len(jobs) // world)
        mine += [(*jobs[0], False)] * (rounds - len(mine))
    return mine


@torch.no_grad()
def run_validation(run: TrainRun, step: int) -> list[Path]:
    """Render every validation prompt at every validation weight into output_dir/samples/, the
    (prompt, weight) pairs split across the processes (each writes its own files); then all meet
    at a barrier bounded by train.collective_timeout_s. Under DDP and DeepSpeed ZeRO-2 every
    process holds the whole weights, so a forward involves no other process; under FSDP every
    forward gathers weights from all, so all render the same number of clips (`my_jobs`)."""
    from ufo_video.lora.apply import set_lora_weights
    from ufo_video.train.fsdp import uses_fsdp

    acc = run.accelerator
    cfg = run.cfg
    jobs = my_jobs(len(cfg.train.validation_prompts), list(cfg.train.validation_weights),
                   acc.process_index, acc.num_processes, equal=uses_fsdp(acc))
    written: list[Path] = []
    if jobs:
        model, device = run.model, acc.device
        grads = {n: p.requires_grad for n, p in run.transformer.named_parameters()}
        run.transformer.eval()
        task, task_inputs = validation_task(cfg, model)
        task_inputs = {**validation_defaults(run, task), **task_inputs}
        pipe = model.pipeline(task)
        pipe.set_progress_bar_config(disable=True)
        low_vram = cfg.train.low_vram
        try:
            with on_device(model.vae, device, low_vram), on_device(model.text_encoder, device, low_vram):
                for i, weight, keep in jobs:
                    set_lora_weights(model, {ADAPTER_NAME: weight})
                    with acc.autocast():
                        result = pipe(
                            prompt=cfg.train.validation_prompts[i],
                            negative_prompt=model.pipeline_negative_prompt(cfg.infer.negative_prompt),
                            num_frames=cfg.data.video_sample_n_frames,
                            height=cfg.data.video_sample_size,
                            width=cfg.data.video_sample_size,
                            num_inference_steps=cfg.infer.num_inference_steps,
                            guidance_scale=cfg.infer.guidance_scale,
                            generator=torch.Generator(device="cpu").manual_seed(cfg.infer.seed),
                            output_type="pt",
                            **task_inputs,
                        )
                    if keep:
                        path = run.output_dir / "samples" / f"step-{step:06d}-prompt{i}-w{weight:g}.mp4"
                        written.append(write_video(result.frames[0], path, fps=validation_fps(run)))
        finally:
            set_lora_weights(model, {ADAPTER_NAME: 1.0})
            for n, p in run.transformer.named_parameters():  # adapter switching must not change what trains
                p.requires_grad_(grads[n])
            run.transformer.train()
    acc.wait_for_everyone()
    return written
