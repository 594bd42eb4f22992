"""`ufo-video bench`: the project's performance targets as side-by-side ratios (see runner.py,
docs/benchmarks.md). Prints a table; `--json OUT` saves every field."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


#: the CPU suite's case names (runner.CASES's keys, listed here so `--help` imports no torch;
#: tests/test_bench.py checks the two agree)
CASE_NAMES = ("trainer_step", "cached_step", "loader", "loader_images", "static_memory", "lora_fused", "lora_unfused",
              "weight_change", "step_cache", "load_memory", "seek_cost", "plan_scale", "caption_bytes", "fp8_error")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="measure the performance targets (trainer overhead, cache, loader, LoRA, step cache)",
        description="Each case times two sides alternately in one process and reports the median ratio with "
        "its spread and the peak memory of each side. Random weights; sizes from the 'small' preset "
        "(or 'smoke' with --smoke).",
    )  # fmt: skip
    p.add_argument("--only", action="append", metavar="NAME", choices=CASE_NAMES,
                   help=f"run only this case (repeatable): {', '.join(CASE_NAMES)}")
    p.add_argument("--json", type=Path, metavar="OUT", help="write every field of the results to this JSON file")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and 1 round (CI: checks that every case runs)")
    p.add_argument("--repeats", type=int, default=None, metavar="N", help="interleaved rounds per case")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch intra-op CPU threads (default: torch's; 1 with --smoke). On a shared machine fewer "
                   "threads than cores keep other jobs from stalling every kernel")
    p.add_argument("--suite", choices=("cpu", "gpu"), default="cpu",
                   help="cpu (default): the side-by-side ratio cases above; gpu: the one-shot real-size check "
                   "(random-weight 12-14B transformers, LoRA training and inference; docs/benchmarks.md)")
    p.add_argument("--out", type=Path, metavar="DIR", help="--suite gpu: folder for gpu.json and gpu.md (required)")
    p.add_argument("--preset", choices=("real", "tiny"), default="real",
                   help="--suite gpu: real sizes (needs CUDA) or tiny (CPU, seconds; same code paths)")
    p.add_argument("--models", metavar="A,B", help="--suite gpu: only these entries or families (comma-separated)")
    p.add_argument("--budget", type=float, metavar="S",
                   help="--suite gpu: time budget in seconds (default: the preset's, 450 for real); cases that "
                   "cannot start in time are reported as skipped")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    if args.suite == "gpu":
        return _gpu(args)
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


def _gpu(args: argparse.Namespace) -> int:
    """The GPU suite; imports nothing the CPU suite needs (PyAV, pydantic): see bench/gpu_suite.py."""
    from ufo_video.bench.gpu_report import format_table
    from ufo_video.bench.gpu_suite import run_gpu_suite
    from ufo_video.errors import UfoError

    if args.out is None:
        raise UfoError("--suite gpu needs --out DIR (where gpu.json and gpu.md are written)")
    cpu_only = [flag for flag, used in (("--only", args.only), ("--json", args.json), ("--smoke", args.smoke),
                                        ("--repeats", args.repeats is not None)) if used]
    if cpu_only:
        raise UfoError(f"{', '.join(cpu_only)} belong(s) to the cpu suite; --suite gpu takes --out, --preset, --models")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    device = None
    if args.device != "auto":
        import torch

        device = torch.device(args.device)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    parts = ["ufo-video", "bench", "--suite", "gpu", "--out", str(args.out), "--preset", args.preset]
    if args.models:
        parts += ["--models", args.models]
    if args.budget is not None:
        parts += ["--budget", f"{args.budget:g}"]
    if args.device != "auto":
        parts += ["--device", args.device]
    if args.threads is not None:
        parts += ["--threads", str(args.threads)]
    cases, header = run_gpu_suite(args.out, args.preset, models, device, command=shlex.join(parts),
                                  progress=lambda m: print(m, file=sys.stderr, flush=True), budget_s=args.budget)
    print(format_table(cases))
    print(f"\n{header['device']['name']}; {header['seconds']:.0f} s; wrote {args.out / 'gpu.json'} and {args.out / 'gpu.md'}")
    errors = [c.id for c in cases if c.status == "error"]
    if errors:
        print(f"error: {len(errors)} case(s) failed with an exception (tracebacks in gpu.json): {', '.join(errors)}",
              file=sys.stderr)
        return 1
    return 0
