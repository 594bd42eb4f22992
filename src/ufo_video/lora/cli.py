"""`ufo-video lora inspect | convert | combine | bake`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FORMAT_NAMES = ("kohya", "musubi", "comfy", "peft")
THREADS_HELP = "torch CPU threads (default: free CPUs by the load average)"  # lora.formats.FORMATS, without importing torch here

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
MODEL_HELP = (
    "model folder whose transformer module names and shapes are used (configs only, no weights read); "
    "default: a family's bundled configs (the one the file's metadata names, else the one whose names match)"
)


def register(sub: argparse._SubParsersAction) -> None:
    lora = sub.add_parser("lora", help="inspect, convert, combine LoRA files; bake them into a model")
    lsub = lora.add_subparsers(dest="lora_command", metavar="ACTION")
    lsub.required = True

    ins = lsub.add_parser("inspect", help="format, ranks, alpha, targets, size and metadata of a LoRA file")
    ins.add_argument("file", type=Path)
    ins.add_argument("--model", type=Path, help="also check names and shapes against this model folder")
    ins.add_argument("--json", action="store_true", help="print the report as JSON")
    ins.set_defaults(func=_inspect)

    conv = lsub.add_parser("convert", help="rewrite a LoRA in another key format (bit-exact): kohya, musubi, comfy, peft")
    conv.add_argument("src", type=Path)
    conv.add_argument("dst", type=Path)
    conv.add_argument("--to", required=True, metavar="FORMAT",
                      help="kohya (lora_unet__ keys: the UFO reference's and its base model's merge_lora), musubi "
                           "(lora_unet_ keys: musubi-tuner and ComfyUI; for a family without a kohya layout of its "
                           "own, kohya writes this), comfy (diffusion_model. keys: ComfyUI, diffusion-pipe), peft "
                           "(diffusers' load_lora_weights), or a format a model family adds; each family's formats "
                           "are listed in README")
    conv.add_argument("--model", type=Path, help=MODEL_HELP)
    conv.add_argument("--overwrite", action="store_true", help="replace DST if it exists (DST may be SRC)")
    conv.set_defaults(func=_convert)

    comb = lsub.add_parser("combine", help="merge LoRAs FILE:WEIGHT ... into one (exact rank concatenation)")
    comb.add_argument("specs", nargs="+", metavar="FILE[:WEIGHT]")
    comb.add_argument("--out", type=Path, required=True)
    comb.add_argument("--rank", type=int, help="reduce each module to this rank by SVD (prints the error)")
    comb.add_argument("--to", choices=FORMAT_NAMES, help="key layout of the output (default: the first input's)")
    comb.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    comb.add_argument("--model", type=Path, help=MODEL_HELP)
    comb.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    comb.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)
    comb.set_defaults(func=_combine)

    bake = lsub.add_parser("bake", help="write a model folder with LoRAs merged into the transformer")
    bake.add_argument("--model", type=Path, required=True, help="input model folder (either layout)")
    bake.add_argument("--lora", action="append", required=True, metavar="FILE[:WEIGHT]", help="repeatable")
    bake.add_argument("--out", type=Path, required=True, help="new model folder (must not exist or be empty)")
    bake.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)
    bake.set_defaults(func=_bake)


def _inspect(args: argparse.Namespace) -> int:
    from ufo_video.lora.tools import format_inspect, inspect_lora

    report = inspect_lora(args.file, args.model)
    print(json.dumps(report, indent=2) if args.json else format_inspect(report))
    problems = report["nonfinite"] or report.get("unmatched") or report.get("shape_mismatches") or report.get("duplicates")
    return 1 if problems else 0


def _convert(args: argparse.Namespace) -> int:
    from ufo_video.lora.tools import convert_lora
    from ufo_video.writable import ensure_writable, refuse_existing

    refuse_existing([] if args.overwrite else [args.dst]), ensure_writable(args.dst.parent)
    out, folded = convert_lora(args.src, args.dst, args.to, args.model, exclusive=not args.overwrite)
    tensors = f"alpha/rank folded into lora_B of {folded} modules" if folded else "tensors unchanged"
    print(f"wrote {args.dst} ({out.format}, {len(out.modules)} modules, {tensors})")
    return 0


def _combine(args: argparse.Namespace) -> int:
    from ufo_video.threads import apply_threads

    apply_threads(args.threads)
    import torch

    from ufo_video.errors import LoraError
    from ufo_video.lora.formats import write_lora
    from ufo_video.lora.tools import combine_loras, parse_lora_spec

    if args.rank is not None and args.rank < 1:
        raise LoraError("--rank must be at least 1")
    from ufo_video.writable import ensure_writable, refuse_existing

    refuse_existing([] if args.overwrite else [args.out]), ensure_writable(args.out.parent)
    specs = [parse_lora_spec(s) for s in args.specs]
    result = combine_loras(specs, args.model, args.rank, args.to, getattr(torch, DTYPES[args.dtype]))
    write_lora(args.out, result.weights, exclusive=not args.overwrite)
    ranks = ", ".join(f"{r} x{n}" for r, n in sorted(result.weights.ranks.items()))
    print(f"wrote {args.out} ({result.weights.format}, {len(result.weights.modules)} modules, rank {ranks}, scale 1)")
    if args.rank is not None:
        print(
            f"SVD to rank {args.rank}: {result.reduced} modules reduced; relative error "
            f"max {result.max_rel_error:.3e}, overall {result.total_rel_error:.3e}"
        )
    return 0


def _bake(args: argparse.Namespace) -> int:
    from ufo_video.threads import apply_threads

    apply_threads(args.threads)
    from ufo_video.lora.tools import bake_model, parse_lora_spec

    specs = [parse_lora_spec(s) for s in args.lora]
    out = bake_model(args.model, specs, args.out)
    listed = ", ".join(f"{p.name}:{w:g}" for p, w in specs)
    print(f"wrote {out}: {args.model} with {listed} merged into the transformer (fp32 merge)")
    return 0
