"""`ufo-video generate` and `ufo-video sweep`.

Flags are applied onto the one validated config (`--config FILE` and `key=value` overrides
first, flags last), so every setting of a run comes from a `UfoConfig`. A flag left out keeps
the config's value; the config's defaults are the reference predict scripts' values
(384x672, 49 frames, 8 fps, 50 steps, guidance 6.0, seed 43) except LoRA weight 0.15.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ufo_video.cli_intermixed import intermixed
from ufo_video.errors import UfoError

# flag attribute -> config key understood by `settings.apply_values`
FLAG_KEYS = {
    "model": "model", "prompt": "prompt", "negative_prompt": "negative_prompt", "image": "validation_image_start",
    "end_image": "validation_image_end", "video_length": "video_length", "sample_size": "sample_size",
    "fps": "fps", "steps": "num_inference_steps", "guidance_scale": "guidance_scale", "seed": "seed",
    "memory_mode": "GPU_memory_mode", "dtype": "weight_dtype", "device": "device", "blocks_to_swap": "blocks_to_swap",
    "flow_shift": "flow_shift",
}  # fmt: skip
# what --from-sidecar may still change: where the files are and how the model is placed
SIDECAR_FLAGS = {"model", "memory_mode", "device", "blocks_to_swap"}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML/YAML config file (its [model] and [infer] sections)")
    p.add_argument("--model", help="model folder (model.pretrained_model_name_or_path)")
    p.add_argument("--prompt")
    p.add_argument("--negative-prompt")
    p.add_argument("--image", help="start image: image-to-video, the first frame is kept (InP models)")
    p.add_argument("--end-image", help="end image: also keep the last frame (needs --image)")
    p.add_argument("--video-length", type=int,
                   help="frames (default 49): the model's rule, t*k+1 for its VAE's time compression t (4k+1 for "
                        "most models); others are rounded with a notice naming the model's rule")
    p.add_argument("--sample-size", type=int, nargs=2, metavar=("H", "W"),
                   help="default 384 672; each side the model's rule, a multiple of its VAE's spatial compression "
                        "x patch (16 for most models); others are rounded with a notice naming the rule")
    p.add_argument("--fps", type=int)
    p.add_argument("--steps", type=int, help="denoising steps (default 50)")
    p.add_argument("--guidance-scale", type=float, help="classifier-free guidance (default 6.0)")
    p.add_argument("--flow-shift", type=float, metavar="X",
                   help="the sampling schedule's static flow shift (infer.flow_shift; default: the model's scheduler "
                   "config), e.g. the one a step-distillation LoRA comes with; refused for a model whose scheduler "
                   "shifts by the video size")  # fmt: skip
    p.add_argument("--seed", type=int, help="default 43")
    p.add_argument("--memory-mode", help="GPU_memory_mode: model_full_load, model_cpu_offload, "
                   "model_cpu_offload_and_qfloat8, model_cpu_offload_and_fp8_scaled, sequential_cpu_offload, "
                   "group_offload")  # fmt: skip
    p.add_argument("--blocks-to-swap", type=int, metavar="N",
                   help="keep N transformer blocks in host memory, each copied to the GPU just before it runs "
                   "(infer.blocks_to_swap; docs/memory.md)")  # fmt: skip
    p.add_argument("--dtype", help="weight dtype: bf16 (default), fp16, fp32")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1 ...")
    p.add_argument("--format", help="mp4 (default, H.264), gif, or png (a folder of frames)")
    p.add_argument("--cache", choices=["none", "first-block"], help="step cache (TeaCache counterpart)")
    p.add_argument("--cache-threshold", type=float, help="first-block cache threshold (default 0.08)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (model.threads; default: free CPUs by the load average); in the sidecar")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, before, between or after the options: infer.fps=16 weight_dtype=fp32")


def register(sub: argparse._SubParsersAction) -> None:
    gen = intermixed(sub.add_parser("generate", help="text/image-to-video with optional LoRAs (UFOs)"))
    _common(gen)
    gen.add_argument("--lora", action="append", metavar="PATH[:WEIGHT][@EXPERT]",
                     help="a LoRA and its weight (default infer.lora_weight = 0.15); repeat for several; multi-expert "
                     "models: @EXPERT sends a file without ufo_expert metadata to that expert")  # fmt: skip
    gen.add_argument("--fuse", action="store_true", help="merge the LoRAs into the weights (faster; fixed weights)")
    gen.add_argument("--prompts", type=Path, help="batch: a text file (one prompt per line) or JSONL records")
    gen.add_argument("--out", type=Path, help="output file (one video); default save_path/NNNNNNNN.mp4")
    gen.add_argument("--out-dir", type=Path, help="folder for numbered outputs (default infer.save_path)")
    gen.add_argument("--from-sidecar", type=Path, metavar="FILE.json", help="make a saved video again, exactly")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing --out file (and its sidecar)")
    gen.set_defaults(func=_generate)

    sw = intermixed(sub.add_parser(
        "sweep", help="LoRA checkpoints x weights over prompts x seeds: grid, paired statistics, recommended setting",
        description="Render every (prompt, seed) with the base model and with every LoRA at every weight (the "
        "LoRAs are loaded once), score each written video, and recommend a (checkpoint, weight) by a stated rule: "
        "the largest consistency gain over the base whose 95%% interval (t, paired over prompts and seeds, "
        "simultaneous over the settings) lies above 0 and --min-effect, among settings that surely keep "
        "--keep-motion of the base's motion; else the base. Writes videos, grids, sweep.json and sweep.html.",
    ))  # fmt: skip
    _common(sw)
    sw.add_argument("--lora", required=True, action="append", metavar="PATH",
                    help="a LoRA file, or a training output_dir (all its checkpoint-N.safetensors); repeat for several")  # fmt: skip
    sw.add_argument("--weights", default="0,0.05,0.1,0.2,0.5,1.0", help="comma-separated (default 0,0.05,0.1,0.2,0.5,1.0)")
    sw.add_argument("--expert-scale", action="append", default=[], metavar="EXPERT=FACTOR",
                    help="multi-expert models: that expert's file runs at FACTOR x the weight (e.g. transformer_2=2: "
                    "weight 0.1 runs 0.1 and 0.2); files are paired per expert by ufo_expert and checkpoint step")  # fmt: skip
    sw.add_argument("--base-lora", action="append", default=[], metavar="PATH[:WEIGHT][@EXPERT]",
                    help="a LoRA held at WEIGHT (default 1) in every video, the base included (e.g. a step-distillation "
                    "LoRA with its --steps/--guidance-scale); routed to an expert as generate's --lora; repeatable")  # fmt: skip
    sw.add_argument("--prompts", type=Path, help="prompts: a text file (one per line) or JSONL {\"prompt\", \"image\"?}")
    sw.add_argument("--prompts-from-captions", type=Path, metavar="METADATA",
                    help="prompts: --captions N captions of a dataset's metadata (.json/.jsonl/.csv)")  # fmt: skip
    sw.add_argument("--captions", type=int, default=4, help="how many captions --prompts-from-captions takes (default 4)")
    sw.add_argument("--default-prompts", choices=["t2v", "i2v"], default="t2v",
                    help="with no --prompt/--prompts: the built-in set (static and moving scenes; i2v draws its start images)")  # fmt: skip
    sw.add_argument("--seeds", help="comma-separated seeds, every prompt at each (default: --seed)")
    sw.add_argument("--out-dir", type=Path, default=Path("samples/ufo-sweep"))
    sw.add_argument("--overwrite", action="store_true", help="replace an earlier sweep in --out-dir")
    sw.add_argument("--keep-motion", type=float, default=0.8,
                    help="rule: the interval of the motion kept must lie at or above this share (default 0.8)")  # fmt: skip
    sw.add_argument("--min-effect", type=float,
                    help="rule: the smallest gain worth a recommendation, in units of the consistency metric "
                    "(default 0.2 x the base's seed-to-seed standard deviation)")  # fmt: skip
    sw.add_argument("--consistency-metric", default="warp_error",
                    help="rule: consistency metric (default warp_error; or ssim, psnr_db, brightness_flicker ...)")  # fmt: skip
    sw.add_argument("--motion-metric", default="flow_px", help="rule: motion metric (default flow_px)")
    sw.set_defaults(func=_sweep)


def _given(args: argparse.Namespace) -> dict[str, Any]:
    return {key: getattr(args, attr) for attr, key in FLAG_KEYS.items() if getattr(args, attr, None) is not None}


def _configured(args: argparse.Namespace):
    from ufo_video.config import load_config
    from ufo_video.infer.settings import apply_values

    from ufo_video.threads import apply_threads, threads_override

    cfg = load_config(args.config, list(args.overrides) + threads_override(getattr(args, "threads", None)))
    apply_threads(cfg.model.threads)
    values = _given(args)
    return apply_values(cfg, values, print)


def _cache_args(args: argparse.Namespace) -> dict[str, Any]:
    # None leaves the choice to the config ([infer] cache / cache_threshold)
    return {"cache": args.cache, "cache_threshold": args.cache_threshold}


def _generate(args: argparse.Namespace) -> int:
    from ufo_video.infer.outputs import output_format
    from ufo_video.infer.prompts import read_prompt_file
    from ufo_video.infer.run import generate_videos, plan_output_paths
    from ufo_video.infer.settings import parse_lora_arg, request_from_config, settings_from_config

    if args.from_sidecar:
        return _from_sidecar(args)
    if args.prompts and args.prompt is not None:
        raise UfoError("give either --prompt or --prompts FILE, not both")
    cfg = _configured(args)
    loras = [parse_lora_arg(x, cfg.infer.lora_weight) for x in args.lora] if args.lora else None
    settings = settings_from_config(cfg, loras=loras, fuse=True if args.fuse else None, **_cache_args(args))
    base = request_from_config(cfg)
    requests = read_prompt_file(args.prompts, base) if args.prompts else [base]
    fmt = output_format(args.out, args.format or (None if args.out else cfg.infer.output_format))
    if args.out is not None and args.out_dir is not None:
        raise UfoError("give either --out FILE or --out-dir DIR, not both")
    paths = plan_output_paths(len(requests), args.out, args.out_dir or Path(cfg.infer.save_path), fmt)
    generate_videos(settings, requests, paths, fmt, overwrite=args.overwrite)
    return 0


def _from_sidecar(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ufo_video.infer.outputs import output_format, read_sidecar
    from ufo_video.infer.run import generate_videos
    from ufo_video.infer.settings import VideoRequest, check_memory_mode, settings_from_dict

    changing = [f"--{a.replace('_', '-')}" for a in FLAG_KEYS if getattr(args, a) is not None and a not in SIDECAR_FLAGS]
    changing += [f"--{n}" for n in ("lora", "prompts", "config", "cache") if getattr(args, n)]
    changing += ["--fuse"] if args.fuse else []
    changing += ["key=value overrides"] if args.overrides else []
    if changing:
        raise UfoError(
            f"--from-sidecar makes the saved video again; {', '.join(changing)} would change it. "
            "Allowed with it: --out, --format, --model (a moved model folder), --memory-mode, --device, --blocks-to-swap"
        )
    data = read_sidecar(args.from_sidecar)
    settings = settings_from_dict(data["settings"])
    for flag, field in (("model", "model"), ("memory_mode", "memory_mode"), ("device", "device"),
                        ("blocks_to_swap", "blocks_to_swap")):
        if getattr(args, flag) is not None:
            settings = replace(settings, **{field: getattr(args, flag)})
    check_memory_mode(settings.memory_mode)
    try:
        request = VideoRequest(**data["request"])
    except TypeError as exc:
        raise UfoError(f"{args.from_sidecar}: malformed 'request' section ({exc})") from None
    fmt = output_format(args.out, args.format or (None if args.out else data.get("format", "mp4")))
    original = args.from_sidecar.with_suffix("")
    out = args.out or original.with_name(f"{original.name}-reproduced")
    if args.out is None:
        out = out if fmt == "png" else out.with_suffix(f".{fmt}")
    from ufo_video.threads import apply_threads

    # the thread count of the original run, unless --threads says otherwise: CPU results can
    # differ in the last bits between counts, and this command promises the same frames
    recorded = data.get("runtime", {}).get("threads") if isinstance(data.get("runtime"), dict) else None
    apply_threads(args.threads if args.threads is not None else recorded)
    [(_, side)] = generate_videos(settings, [request], [out], fmt, overwrite=args.overwrite)
    new_hash = read_sidecar(side)["frames_sha256"]
    if new_hash == data.get("frames_sha256"):
        print(f"reproduced exactly: frames identical to {args.from_sidecar.name}'s video")
    else:
        print(f"notice: frames differ from the original video (frames_sha256 {new_hash[:12]} vs "
              f"{str(data.get('frames_sha256'))[:12]}); device, dtype kernels or library versions differ")  # fmt: skip
    return 0


def _sweep_samples(args: argparse.Namespace, cfg, out_dir: Path, size: tuple[int, int]) -> list:
    """The (prompt, seed) samples: --prompt, --prompts FILE, --prompts-from-captions, or the default set."""
    from ufo_video.infer.prompts import read_prompt_file
    from ufo_video.infer.settings import request_from_config
    from ufo_video.infer.sweep_prompts import build_samples, caption_prompts, default_requests, parse_seeds

    given = [f for f, v in (("--prompt", args.prompt), ("--prompts", args.prompts),
                            ("--prompts-from-captions", args.prompts_from_captions)) if v is not None]  # fmt: skip
    if len(given) > 1:
        raise UfoError(f"give one source of prompts, not {' and '.join(given)}")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    base = request_from_config(cfg)
    if args.prompts is not None:
        requests = [(r, "") for r in read_prompt_file(args.prompts, base)]
    elif args.prompts_from_captions is not None:
        from dataclasses import replace

        requests = [(replace(base, prompt=p), "") for p in caption_prompts(args.prompts_from_captions, args.captions)]
    elif base.prompt.strip():
        requests = [(base, "")]
    else:
        print(f"no --prompt or --prompts: using the built-in {args.default_prompts} prompt set "
              "(static and moving scenes; see sweep.json)")  # fmt: skip
        requests = default_requests(args.default_prompts, base, out_dir / "start-images", tuple(size))
    return build_samples(requests, seeds)


def _sweep(args: argparse.Namespace) -> int:
    import json

    from ufo_video.eval.choose import ChoiceRule
    from ufo_video.infer.outputs import output_format
    from ufo_video.infer.settings import LoraSpec, parse_lora_arg, settings_from_config
    from ufo_video.infer.sweep import (check_out_dir, checkpoint_labels, expand_lora_paths, format_sweep_table,
                                       parse_weights, run_sweep)  # fmt: skip
    from ufo_video.infer.sweep_pairs import check_stack, model_experts, parse_expert_scales, plan_rows

    weights = parse_weights(args.weights)
    rule = ChoiceRule(args.consistency_metric, args.motion_metric, args.keep_motion, args.min_effect)
    cfg = _configured(args)
    paths = expand_lora_paths(args.lora)
    settings = settings_from_config(cfg, loras=[], **_cache_args(args))
    experts = model_experts(settings.model)
    paths, rows, file_experts = plan_rows(paths, experts, checkpoint_labels(paths))
    scale = parse_expert_scales(args.expert_scale, experts)
    stack = check_stack([parse_lora_arg(x, 1.0) for x in args.base_lora], paths)
    fmt = output_format(None, args.format)
    check_out_dir(args.out_dir, args.overwrite)
    samples = _sweep_samples(args, cfg, args.out_dir, settings.sample_size)
    specs = [LoraSpec(str(p), cfg.infer.lora_weight) for p in paths]
    record = run_sweep(settings, samples, specs, weights, args.out_dir, fmt, rule=rule, overwrite=args.overwrite,
                       rows=rows, scales=[scale.get(e, 1.0) for e in file_experts], stack=stack)  # fmt: skip
    print()
    print(format_sweep_table(json.loads(record.read_text())))
    return 0
