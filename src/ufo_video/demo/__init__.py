"""`ufo-video demo [--out DIR] [--quick]`: the whole mission in miniature, on a CPU.

A tiny base model (the shipped trained one, or `--model DIR`) -> a synthetic dataset (with one broken file) -> the
data check -> a UFO LoRA trained on static clips by the real trainer -> t2v and i2v videos at
several UFO weights (the LoRA loaded once, only its weight changed) -> the metrics and their
trend over the weight -> the chooser (`sweep` over the run's checkpoints x weights x prompts x
seeds, with its recommendation or an honest "none") -> report.html and report.json. Each step prints a numbered progress
line and its time. The report states whether the expected trend (consistency non-decreasing,
dynamics non-increasing as the weight grows) holds, computed from the measured numbers.

Modules: `plan` (sizes, the base-model path), `dataset` (synthetic data), `steps` (one function
per step), `findings` (notes around the verdict of `eval.trend_verdict`), `svg` and `report` (the outputs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

STEPS = 8
# Measured on a shared 2-core machine: one thread made a 64x64x9 video of the tiny base 4-6x
# faster than two (OpenMP threads waiting on each other over very small operations).
DEFAULT_THREADS = 1


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo",
        help="run the end-to-end demo on a tiny model (CPU; about 2.5 minutes on 2 shared cores; --quick: a short smoke run)",
        description="Make data, check it, train a UFO LoRA, generate t2v/i2v at several weights, evaluate, "
        "and write DIR/report.html + DIR/report.json.",
    )
    demo.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default: demo-out)")
    demo.add_argument("--quick", action="store_true", help="fewer steps, weights and frames (a smoke run)")
    demo.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                      help=f"torch CPU threads (default {DEFAULT_THREADS}: the tiny models' small operations run "
                      "faster on one thread, much faster when other processes share the CPU)")  # fmt: skip
    demo.add_argument("--model", type=Path, help="run the same flow on this model folder (any supported family, e.g. "
                      "one made by `model make-tiny --family NAME`) instead of the shipped tiny base")  # fmt: skip
    demo.set_defaults(func=lambda args: run_demo(args.out, quick=args.quick, threads=args.threads, model=args.model))


def run_demo(out: Path, quick: bool = False, threads: int = DEFAULT_THREADS, model: Path | None = None) -> int:
    """Run every step with `threads` torch threads (the previous setting is restored after)."""
    import torch

    from ufo_video.errors import UfoError

    if threads < 1:
        raise UfoError(f"--threads must be at least 1, got {threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(Path(out), quick, model)
    finally:
        torch.set_num_threads(previous)


def _run(out: Path, quick: bool, model: Path | None = None) -> int:
    from ufo_video.demo import findings, steps
    from ufo_video.eval.trend_verdict import verdict as trend_verdict
    from ufo_video.demo.plan import FULL, QUICK
    from ufo_video.demo.report import KIND, machine_info, versions, write_html, write_json
    from ufo_video.errors import UfoError

    from ufo_video.writable import ensure_writable

    plan = QUICK if quick else FULL
    if out.exists() and not out.is_dir():
        raise UfoError(f"--out {out} exists and is not a folder; give a folder (it is created if missing)")
    if out.is_dir() and any(out.iterdir()) and not (out / "report.json").is_file():
        raise UfoError(f"--out {out} is not empty and holds no earlier demo (no report.json); the demo replaces "
                       "its own earlier outputs only: give a new or empty folder")
    ensure_writable(out, "--out folder")
    machine = machine_info()
    timer = steps.Timer(STEPS)
    print(f"ufo-video demo ({plan.name} plan) -> {out}")
    with timer.step("base_model", "base model"):
        base = steps.base_model(out, model=model)
    with timer.step("dataset", "make a small dataset"):
        ds = steps.dataset(out, plan)
    with timer.step("check", "check the dataset"):
        checked = steps.check_data(ds, plan, base, out)
    with timer.step("train", "train a UFO LoRA on static clips (latent cache + trainer)"):
        trained = steps.train_lora(plan, base, ds, checked, out)
    with timer.step("generate", f"generate t2v and i2v at alpha {', '.join(f'{w:g}' for w in plan.weights)}"):
        records, frames = steps.generate(plan, base, trained, out)
    with timer.step("evaluate", "evaluate every video"):
        trends = steps.evaluate(plan, records, frames)
        verdict = trend_verdict(trends)
        if plan.name == "quick":
            findings.quick_caveat(verdict, plan.train_steps, len(plan.weights))
        motion = findings.motion_note(records, plan.gen_size, plan.fps)
        print(verdict["statement"])
        print(motion)
    with timer.step("sweep", f"choose: {plan.checkpoints} checkpoints x weights over {plan.sweep_prompts} prompt(s) "
                    f"x {len(plan.sweep_seeds)} seeds"):
        chosen = steps.sweep(plan, base, trained, out)
    with timer.step("report", "write the report"):
        report = {
            "kind": KIND,
            "plan": plan.to_dict(),
            "base_model": base,
            "dataset": {**ds, "check": checked},
            "training": trained,
            "videos": records,
            "trend": trends,
            "verdict": verdict,
            "motion_note": motion,
            "sweep": chosen,
            "timings": dict(timer.timings),
            "total_seconds": timer.elapsed(),
            "versions": versions(),
            "machine": machine,
        }
        write_json(report, out)
        html = write_html(report, out)
    # the report's own step time is known only now: rewrite both with it (cheap)
    report["timings"] = dict(timer.timings)
    report["total_seconds"] = timer.elapsed()
    report["machine"]["load_average_end"] = machine_info()["load_average_start"]
    write_json(report, out)
    write_html(report, out)
    if base["random"]:
        print("\nNOTE: " + base["banner"])
    print(f"\ndemo finished in {report['total_seconds']:.1f} s; open {html}")
    return 0
