"""`ufo-video model make-tiny | check`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="make a tiny test model, check a model folder")
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
