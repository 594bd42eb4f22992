"""`ufo-video model make-tiny | check`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="make a tiny test model, check a model folder")
    msub = model.add_subparsers(dest="model_command", metavar="ACTION")
    msub.required = True

    tiny = msub.add_parser("make-tiny", help="write a tiny random EasyAnimate V5.1 model (tests, demos)")
    tiny.add_argument("dir", type=Path)
    tiny.add_argument("--layout", choices=["diffusers", "original"], default="diffusers")
    tiny.add_argument("--variant", choices=["inp", "t2v"], default="inp")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_make_tiny)

    check = msub.add_parser("check", help="load a model folder strictly and report sizes and memory needs")
    check.add_argument("dir", type=Path)
    check.add_argument("--meta", action="store_true", help="configs and weight headers only; no weights loaded")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=_check)


def _make_tiny(args: argparse.Namespace) -> int:
    from ufo_video.models.tiny import make_tiny

    out = make_tiny(args.dir, layout=args.layout, variant=args.variant, seed=args.seed)
    print(f"wrote tiny EasyAnimate V5.1 {args.variant} model ({args.layout} layout) to {out}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from ufo_video.models.check import check_model, format_report

    report = check_model(args.dir, meta=args.meta)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report, args.meta))
    return 0
