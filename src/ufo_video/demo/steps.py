"""The demo's steps, each a plain function over the previous steps' results, using only the
tool's public layers (models, data, train, infer, eval) — the demo is a user of the tool, so
whatever it shows is what the commands do.

Results are plain dicts of JSON-ready values (they go to report.json as they are); the
generated frames stay in memory beside them for evaluation.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ufo_video.demo import plan as plans
from ufo_video.demo.dataset import make_dataset, start_image, training_metadata
from ufo_video.demo.plan import DemoPlan
from ufo_video.errors import UfoError
from ufo_video.process.stop import StopRequested

RANDOM_BANNER = (
    "RANDOM TINY MODEL: the shipped trained tiny base model ({path}) is not present, so this demo "
    "runs on a tiny model of the first registered family with RANDOMLY INITIALISED weights (make_tiny, seed 0). "
    "Its videos are not meaningful pictures: the numbers below show the machinery (data check, UFO "
    "training, the alpha sweep, the metrics), not what UFO does to a trained model."
)


@dataclass
class Timer:
    """Numbered progress lines with per-step wall times (kept for the report)."""

    total: int
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    _n: int = 0

    @contextmanager
    def step(self, key: str, title: str):
        """`key` names the step in report.json (stable); `title` is what the user reads."""
        self._n += 1
        print(f"\n[{self._n}/{self.total}] {title}", flush=True)
        t0 = time.perf_counter()
        yield
        dt = time.perf_counter() - t0
        self.timings[key] = dt
        print(f"[{self._n}/{self.total}] done in {dt:.1f} s", flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


# ---------------------------------------------------------------------------- 1. base model


def base_model(out: Path, base_dir: Path | None = None, model: Path | None = None) -> dict:
    """The model the demo runs on: `model` when given (any family; the demo makes the videos of
    the tasks it supports), else the shipped trained tiny base when it exists, else a random tiny
    model of the first registered family with a banner. Never silent: the choice is printed and
    recorded."""
    from ufo_video.models.registry import ADAPTERS, model_shell

    banner = None
    if model is not None:
        path = Path(model)
        if not path.is_dir():
            raise UfoError(f"--model {path}: folder not found")
        print(f"base model: {path} (given with --model)")
    else:
        base_dir = plans.TINY_BASE_DIR if base_dir is None else base_dir
        if base_dir.is_dir():
            path = base_dir
            print(f"base model: the shipped trained tiny base {path}")
        else:
            family = next(iter(ADAPTERS.values()))
            path = out / "tiny-random"
            if not (path / "model_index.json").is_file():
                family.make_tiny(path, layout=family.tiny_choices()["layout"][0], variant=family.tiny_choices()["variant"][0])
            banner = RANDOM_BANNER.format(path=base_dir)
            print("!" * 78 + f"\n{banner}\n" + "!" * 78)
    shell = model_shell(path)
    experts = shell.experts()
    if len(experts) > 1:
        raise UfoError(f"{path}: the demo trains one LoRA in one run; this model has {len(experts)} experts "
                       "(train one LoRA per expert with `ufo-video train ... train.expert=NAME`)")  # fmt: skip
    modes = [m for m in ("t2v", "i2v") if m in shell.tasks]
    if not modes:
        raise UfoError(f"{path}: the demo makes text-to-video or image-to-video; this model supports {shell.tasks}")
    info = shell.info
    return {"path": str(path), "random": banner is not None, "banner": banner, "variant": info.variant,
            "layout": info.layout, "family": info.family, "modes": modes}  # fmt: skip


# ---------------------------------------------------------------------------- 2-3. data


def dataset(out: Path, plan: DemoPlan) -> dict:
    summary = make_dataset(out / "dataset", plan)
    print(f"{plan.images} images, {plan.videos} videos and 1 deliberately broken file ({summary['broken'][0]}) "
          f"in {summary['root']}")  # fmt: skip
    return summary


def data_config(plan: DemoPlan, model: str, root: str, meta: str, output_dir: Path):
    """The one `UfoConfig` of the demo (check, train and the record in the report)."""
    import torch

    from ufo_video.config import UfoConfig

    return UfoConfig.model_validate({
        # the threads `demo --threads` set (train would otherwise pick its own default)
        "model": {"pretrained_model_name_or_path": model, "weight_dtype": "fp32", "device": "cpu",
                  "threads": torch.get_num_threads()},
        "data": {"train_data_dir": root, "train_data_meta": meta, "clip_mode": "static",
                 "image_sample_size": plan.train_size, "video_sample_size": plan.train_size,
                 "token_sample_size": plan.train_size, "video_sample_n_frames": plan.train_frames,
                 "enable_bucket": False, "dataloader_num_workers": plan.workers,
                 "cache_latents": plan.cache_latents},
        # network_alpha = rank: the LoRA's scale alpha/rank is 1, so the inference weight is the
        # only multiplier on the learned correction
        "lora": {"rank": plan.rank, "network_alpha": float(plan.rank)},
        "train": {"output_dir": str(output_dir), "train_mode": "inpaint", "train_batch_size": plan.batch_size,
                  "max_train_steps": plan.train_steps,
                  "checkpointing_steps": max(1, plan.train_steps // max(1, plan.checkpoints)),
                  "learning_rate": plan.learning_rate, "mixed_precision": "no", "gradient_checkpointing": False,
                  "report_to": "none", "save_state": False, "seed": plan.seed,
                  # trains from the latent cache on clean given frames: with "model" each cached step
                  # would also load the VAE and encode freshly noised given frames (see
                  # train.start_image_noise); the demo's figures (docs/tiny-base-model.md) are from "off"
                  "start_image_noise": "off",
                  "overwrite_output_dir": True},  # the demo's own folder: a rerun replaces its training
    })  # fmt: skip


def check_data(ds: dict, plan: DemoPlan, base: dict, out: Path) -> dict:
    """`data check` through its API; flagged entries are left out of the training metadata."""
    from ufo_video.data.check import check_dataset

    cfg = data_config(plan, base["path"], ds["root"], ds["metadata"], out / "train")
    report = check_dataset(ds["metadata"], ds["root"], cfg, workers=plan.workers)
    text = report.format()
    print(text)
    if any(p.index is None for p in report.problems):
        raise RuntimeError(f"the demo's own metadata failed the check:\n{text}")
    bad = {p.index for p in report.problems}
    flagged = {p.file_path for p in report.problems}
    if not set(ds["broken"]) <= flagged:
        raise RuntimeError(f"the data check did not flag the deliberately broken file(s) {ds['broken']}:\n{text}")
    meta, excluded = training_metadata(Path(ds["metadata"]), bad, Path(ds["root"]) / "train_metadata.json")
    print(f"training metadata without the {len(excluded)} flagged entr{'y' if len(excluded) == 1 else 'ies'}: {meta}")
    return {"summary": text, "report": report.to_dict(), "excluded": excluded, "train_metadata": str(meta)}


# ---------------------------------------------------------------------------- 4. training


def read_losses(output_dir: Path) -> list[dict]:
    from ufo_video.train.loss_log import read_records

    return read_records(output_dir / "losses.jsonl")


def train_lora(plan: DemoPlan, base: dict, ds: dict, checked: dict, out: Path) -> dict:
    """The real trainer on static clips (clip_mode static, train_mode inpaint). With
    `plan.cache_latents` the clips and captions are encoded once (`data cache`) and the trainer
    reads the cache: the VAE encodes dominate a tiny model's step time on a CPU. The cache keeps
    the mask shapes inference uses (all masked = t2v, first frame kept = i2v, first and last
    kept), not the random box/span masks."""
    from ufo_video.train.loop import train

    output_dir = out / "train"
    cfg = data_config(plan, base["path"], ds["root"], checked["train_metadata"], output_dir)
    cache = None
    if plan.cache_latents:
        from ufo_video.data.cache_build import build_cache

        t0 = time.perf_counter()
        report = build_cache(cfg, progress=False)
        cache = {"summary": report.format(), "seconds": time.perf_counter() - t0}
        print(cache["summary"])
    result = train(cfg)
    if result.interrupted:
        raise StopRequested(result.interrupted)  # the trainer saved what it had; the CLI reports the stop
    if result.lora_path is None:
        raise UfoError("training finished without a LoRA file (no step completed); run the demo again")
    losses = read_losses(output_dir)
    return {"lora": str(result.lora_path), "steps": result.steps, "final_loss": result.final_loss,
            "seconds": result.seconds, "cache": cache, "losses": [[r["step"], r["loss"]] for r in losses],
            "config": cfg.model_dump(mode="json")}  # fmt: skip


# ---------------------------------------------------------------------------- 5. generation


def generate(plan: DemoPlan, base: dict, trained: dict, out: Path) -> tuple[list[dict], dict[int, np.ndarray]]:
    """t2v and i2v over the weights with fixed seeds. The LoRA is loaded once, unfused; only its
    weight changes between videos (`set_lora_weights`). Per (mode, prompt): one mp4 + sidecar
    per weight and a labelled grid (mp4 and gif). Returns (video records, frames by record id)."""
    from ufo_video.infer.engine import VideoGenerator
    import torch

    from ufo_video.infer.outputs import write_output, write_video_and_sidecar
    from ufo_video.infer.settings import GenerationSettings, LoraSpec, VideoRequest
    from ufo_video.infer.sweep import label_grid, weight_name

    lora = LoraSpec(trained["lora"], plan.weights[0])
    settings = GenerationSettings(
        model=base["path"], sample_size=(plan.gen_size, plan.gen_size), video_length=plan.gen_frames, fps=plan.fps,
        num_inference_steps=plan.inference_steps, guidance_scale=plan.guidance_scale, memory_mode="model_full_load",
        weight_dtype="fp32", device="cpu", loras=(lora,),
    )  # fmt: skip
    gen = VideoGenerator(settings)
    records: list[dict] = []
    frames_by_id: dict[int, np.ndarray] = {}
    for mode in [m for m in plan.modes if m in base.get("modes", plan.modes)]:
        for k, prompt in enumerate(plan.prompts):
            folder = out / "videos" / f"{mode}-prompt{k}"
            image = str(start_image(prompt, plan.media_size, folder / "start.png")) if mode == "i2v" else None
            request = VideoRequest(prompt.text, "", prompt.seed, image=image)
            columns = []
            for weight in plan.weights:
                gen.set_lora_weights([weight])
                t0 = time.perf_counter()
                frames = gen.generate(request)
                seconds = time.perf_counter() - t0
                run_settings = replace(settings, loras=(replace(lora, weight=weight),))
                path, _ = write_video_and_sidecar(frames, folder / f"{weight_name(weight)}.mp4", "mp4", run_settings, request,
                                                  {"threads": torch.get_num_threads()})
                print(f"{mode} prompt {k} alpha {weight:g}: {path} ({seconds:.1f} s)")
                frames_by_id[len(records)] = frames
                records.append({"mode": mode, "prompt": prompt.text, "prompt_index": k, "seed": prompt.seed,
                                "weight": weight, "file": str(path.relative_to(out)), "seconds": seconds,
                                "start_image": None if image is None else str(Path(image).relative_to(out))})  # fmt: skip
                columns.append(frames)
            grid = label_grid(columns, [f"a={w:g}" for w in plan.weights])
            write_output(grid, folder / "grid.mp4", "mp4", plan.fps)
            write_output(grid, folder / "grid.gif", "gif", plan.fps)
    return records, frames_by_id


# ---------------------------------------------------------------------------- 6. evaluation


def evaluate(plan: DemoPlan, records: list[dict], frames_by_id: dict[int, np.ndarray]) -> dict:
    """Every metric of every video, then the trend over the weights (all videos, and per mode).
    Metrics are taken on the generated uint8 frames (the pixels whose SHA-256 the sidecar
    records), before the mp4 encoder's lossy compression."""
    from ufo_video.eval.metrics import evaluate_frames
    from ufo_video.eval.summary import trend

    for i, rec in enumerate(records):
        rec["metrics"] = evaluate_frames(frames_by_id[i], fps=plan.fps)
    trends = {"all": trend([(r["weight"], r["metrics"]) for r in records])}
    for mode in plan.modes:
        made = [(r["weight"], r["metrics"]) for r in records if r["mode"] == mode]
        if made:  # a model without image-to-video (or t2v) makes no videos of that mode
            trends[mode] = trend(made)
    return trends


# ---------------------------------------------------------------------------- 7. the chooser


def sweep(plan: DemoPlan, base: dict, trained: dict, out: Path) -> dict:
    """`ufo-video sweep`'s own code (`infer.sweep.run_sweep`) over the run's checkpoints x
    `plan.sweep_weights` on `plan.sweep_prompts` prompts x `plan.sweep_seeds` (text-to-video),
    each setting paired with the base on every (prompt, seed): its recommendation by the stated
    rule, or "no setting beats the base reliably" with the numbers. Writes out/sweep/."""
    import json

    from ufo_video.eval.choose import ChoiceRule
    from ufo_video.infer.settings import GenerationSettings, LoraSpec, VideoRequest
    from ufo_video.infer.sweep import expand_lora_paths, format_sweep_table, run_sweep
    from ufo_video.infer.sweep_prompts import build_samples

    ckpts = expand_lora_paths([Path(trained["lora"]).parent])
    settings = GenerationSettings(
        model=base["path"], sample_size=(plan.gen_size, plan.gen_size), video_length=plan.gen_frames, fps=plan.fps,
        num_inference_steps=plan.inference_steps, guidance_scale=plan.guidance_scale, memory_mode="model_full_load",
        weight_dtype="fp32", device="cpu",
    )  # fmt: skip
    i2v = "t2v" not in base.get("modes", ["t2v"])  # a model without text-to-video: from the start frames
    requests = [(VideoRequest(p.text, "", p.seed, image=str(start_image(p, plan.media_size, out / "sweep-start" / f"p{k}.png"))
                              if i2v else None), "") for k, p in enumerate(plan.prompts[: plan.sweep_prompts])]  # fmt: skip
    samples = build_samples(requests, list(plan.sweep_seeds))
    # the demo's folder is its own: a rerun replaces its earlier sweep
    path = run_sweep(settings, samples, [LoraSpec(str(c), 0.0) for c in ckpts], list(plan.sweep_weights), out / "sweep",
                     "mp4", rule=ChoiceRule(), overwrite=True)  # fmt: skip
    record = json.loads(path.read_text())
    table = format_sweep_table(record)
    print(table)
    rec = record["recommendation"]
    return {"checkpoints": [c.name for c in ckpts], "samples": len(samples), "weights": list(plan.sweep_weights),
            "recommendation": rec, "trend": (record.get("trend_intervals") or {}).get("statement"), "table": table,
            "html": str((out / "sweep" / "sweep.html").relative_to(out))}  # fmt: skip
