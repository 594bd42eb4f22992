"""`ufo-video model make-tiny | check | plan`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="make a tiny test model, check a model folder, plan training memory")
    msub = model.add_subparsers(dest="model_command", metavar="ACTION")
    msub.required = True

    tiny = msub.add_parser("make-tiny", help="write a tiny random model of a family (tests, demos, trying commands)")
    tiny.add_argument("dir", type=Path)
    tiny.add_argument("--family", default="easyanimate", help="easyanimate (default), wan or ltx2")
    tiny.add_argument("--layout", help="easyanimate: diffusers (default) or original; wan: diffusers (default) or "
                      "single-file (the transformer as one file with Wan's original names, as ComfyUI users have)")
    tiny.add_argument("--variant", help="easyanimate: inp (default), t2v; wan: t2v (default, 2.1), i2v (2.1 with CLIP), "
                      "ti2v (2.2 5B), a14b (2.2 two experts), a14b-i2v; ltx2: t2v (default), i2v, t2v-2.3, i2v-2.3 (LTX-2.3)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_make_tiny)

    check = msub.add_parser("check", help="load a model folder strictly and report sizes and memory needs")
    check.add_argument("dir", type=Path)
    check.add_argument("--meta", action="store_true", help="configs and weight headers only; no weights loaded")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--threads", type=int, metavar="N",
                       help="torch CPU threads (default: free CPUs by the load average)")
    check.set_defaults(func=_check)

    plan = msub.add_parser("plan", help="estimate a LoRA training step's device memory and the block swap each "
                           "card size needs (before downloading or loading anything)")
    plan.add_argument("source", help="a model folder (configs are enough) or a training config file (.toml/.yaml)")
    plan.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="clip size (default: the config's)")
    plan.add_argument("--frames", type=int, help="frames per clip (default: the config's video_sample_n_frames)")
    plan.add_argument("--rank", type=int, help="LoRA rank (default: the config's)")
    plan.add_argument("--batch", type=int, help="train_batch_size (default: the config's)")
    plan.add_argument("--expert", help="multi-expert models: the expert trained (default: the first)")
    plan.add_argument("--fp8", choices=("off", "plain", "scaled"), help="base storage (default: the config's)")
    plan.add_argument("--activation-offload", action="store_true", help="checkpointed activations in host memory")
    plan.add_argument("--low-vram", action="store_true", help="VAE and text encoders off the GPU during steps")
    plan.add_argument("--cards", type=float, nargs="+", default=[16, 24, 48, 80], metavar="GB")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=_plan)


def _make_tiny(args: argparse.Namespace) -> int:
    from ufo_video.models.registry import make_tiny_model

    out, what = make_tiny_model(args.family, args.dir, layout=args.layout, variant=args.variant, seed=args.seed)
    print(f"wrote a tiny random {what} to {out}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from ufo_video.models.meta_summary import lookup
    from ufo_video.threads import apply_threads, threads_override

    threads_override(args.threads)  # refuses N < 1 on either path
    if not (args.meta and lookup(args.dir) is not None):  # the stored answer (a shipped config) runs no torch
        apply_threads(args.threads)
    from ufo_video.models.check import check_model, format_report

    report = check_model(args.dir, meta=args.meta)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report, args.meta))
    return 0


def _plan(args: argparse.Namespace) -> int:
    from ufo_video.config import load_config
    from ufo_video.models.registry import model_shell
    from ufo_video.train.memory_estimate import plan_report

    src = Path(args.source)
    is_file = src.is_file() and src.suffix in (".toml", ".yaml", ".yml", ".json")
    overrides = [] if is_file else [f"model.pretrained_model_name_or_path={src}"]
    overrides += [f"lora.rank={args.rank}"] * (args.rank is not None)
    overrides += [f"train.train_batch_size={args.batch}"] * (args.batch is not None)
    overrides += [f"data.video_sample_n_frames={args.frames}"] * (args.frames is not None)
    overrides += ["train.low_vram=true"] * args.low_vram
    if args.fp8 is not None:
        overrides += [f"train.fp8_base={'false' if args.fp8 == 'off' else 'true'}",
                      f"train.fp8_scaled={'true' if args.fp8 == 'scaled' else 'false'}"]
    cfg = load_config(src if is_file else None, overrides)
    shell = model_shell(cfg.model.pretrained_model_name_or_path)
    if args.expert or (cfg.train.expert is None and len(shell.experts()) > 1):
        cfg.train.expert = args.expert or shell.experts()[0].component
        if not args.json:
            print(f"expert: {cfg.train.expert}")
    clip = None
    if args.size:
        rules = shell.rules
        frames = rules.floor_frames(cfg.data.video_sample_n_frames)
        clip = (frames, args.size[0] // rules.size_multiple * rules.size_multiple,
                args.size[1] // rules.size_multiple * rules.size_multiple)
    lines, data = plan_report(cfg, clip, args.activation_offload, tuple(args.cards))
    print(json.dumps(data, indent=2) if args.json else "\n".join(lines))
    return 0
