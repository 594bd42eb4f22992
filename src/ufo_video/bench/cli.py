"""`ufo-video bench`: the project's performance targets as side-by-side ratios (see runner.py,
docs/benchmarks.md). Prints a table; `--json OUT` saves every field."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from ufo_video.bench.runner import CASES

    p = sub.add_parser(
        "bench", help="measure the performance targets (trainer overhead, cache, loader, LoRA, step cache)",
        description="Each case times two sides alternately in one process and reports the median ratio with "
        "its spread and the peak memory of each side. Random weights; sizes from the 'small' preset "
        "(or 'smoke' with --smoke).",
    )  # fmt: skip
    p.add_argument("--only", action="append", metavar="NAME", choices=list(CASES),
                   help=f"run only this case (repeatable): {', '.join(CASES)}")
    p.add_argument("--json", type=Path, metavar="OUT", help="write every field of the results to this JSON file")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and 1 round (CI: checks that every case runs)")
    p.add_argument("--repeats", type=int, default=None, metavar="N", help="interleaved rounds per case")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch intra-op CPU threads (default: torch's; 1 with --smoke). On a shared machine fewer "
                   "threads than cores keep other jobs from stalling every kernel")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from ufo_video.bench.results import format_table, write_json
    from ufo_video.bench.runner import run_bench, select
    from ufo_video.models.memory import resolve_device

    names = select(args.only)
    payload = run_bench(names, smoke=args.smoke, repeats=args.repeats, device=resolve_device(args.device), threads=args.threads,
                        progress=lambda m: print(m, file=sys.stderr))
    results = payload.pop("_results")
    payload["command"] = _command(args)
    print(format_table(results))
    m = payload["machine"]
    print(f"\n{m['cpu']}, {m['logical_cpus']} logical CPUs, device {m['device']}; load average "
          f"{payload['load_average_before']} -> {payload['load_average_after']}; {payload['seconds']} s")
    if args.json:
        print(f"wrote {write_json(args.json, payload)}")
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (from the parsed options, not sys.argv, so it
    is right when called through `ufo_video.cli.main([...])` too)."""
    parts = ["ufo-video", "bench"]
    for name in args.only or []:
        parts += ["--only", name]
    if args.smoke:
        parts.append("--smoke")
    if args.repeats is not None:
        parts += ["--repeats", str(args.repeats)]
    if args.threads is not None:
        parts += ["--threads", str(args.threads)]
    if args.device != "auto":
        parts += ["--device", args.device]
    if args.json:
        parts += ["--json", str(args.json)]
    return shlex.join(parts)
