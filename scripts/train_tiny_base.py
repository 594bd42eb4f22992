#!/usr/bin/env python
"""Train the shipped tiny EasyAnimate-V5.1-architecture base model (src/ufo_video/assets/tiny-base).

Reproduce (2 CPU cores, fp32; see docs/tiny-base-model.md for the measured time):

    python scripts/train_tiny_base.py --out src/ufo_video/assets/tiny-base

Stage 1 constructs the magvit VAE (a fixed 4x4-average / 2x-temporal autoencoder built inside the
real class, see vae_stage.py) and checks its reconstructions; stage 2 trains the InP transformer from scratch with
the repository's flow-matching objective and inpaint conditioning (t2v = zeroed conditioning,
i2v = first frame kept). The model folder is written atomically (temporary folder + rename).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

# the training code beside this script (not library code): `python scripts/train_tiny_base.py` puts
# scripts/ first on sys.path, so its package imports as a sibling
from tiny_base_training import dit_stage, vae_stage
from ufo_video.atomic import write_text_atomic

FRAMES, SIZE = 9, 64
# the VAE must keep the motion: reconstruction flow at least this share of the input's
MIN_FLOW_KEPT = 0.4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("src/ufo_video/assets/tiny-base"))
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ufo-tiny-base-work", help="logs and report")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on a shared machine)")
    p.add_argument("--dit-steps", type=int, default=2000)
    p.add_argument("--dit-batch", type=int, default=16)
    p.add_argument("--pool", type=int, default=512, help="clips encoded once for stage 2")
    p.add_argument("--init-from", type=Path, help="continue from this model folder's transformer (a longer schedule in parts)")
    p.add_argument("--stage", choices=("all", "vae"), default="all", help="'vae': build and check stage 1 only")
    return p.parse_args(argv)


def stage_vae(args: argparse.Namespace) -> tuple[torch.nn.Module, dict]:
    """Build the constructed VAE, calibrate its scaling and refuse it unless it reconstructs
    better than each clip's mean colour and keeps the motion."""
    t0 = time.perf_counter()
    vae = vae_stage.build_vae()
    factor = vae_stage.calibrate_scaling(vae, frames=FRAMES, size=SIZE, seed=args.seed)
    check = vae_stage.check_vae(vae, frames=FRAMES, size=SIZE, seed=args.seed)
    meta = {"scaling_factor": factor, "check": check, "seconds": time.perf_counter() - t0}
    print(f"stage 1: scaling_factor {factor:.4f}; check {json.dumps(check)}")
    if check["l1"] >= check["mean_colour_l1"] or check["flow_px_reconstruction"] < MIN_FLOW_KEPT * check["flow_px_input"]:
        raise SystemExit(f"stage 1 failed its check (L1 must beat the mean colour, flow kept >= {MIN_FLOW_KEPT}): {check}")
    return vae, meta


CARD = """# ufo-video tiny base model

A toy model with the EasyAnimate V5.1 InP architecture (diffusers layout), made by
`scripts/train_tiny_base.py` from synthetic clips of one coloured shape moving over a plain or
gradient background; the base model of `ufo-video demo`. It draws only those scenes, blocky
(its VAE is a constructed 4x4-average autoencoder), 64x64, 9 frames. Data, recipe, measurements
and limits: docs/tiny-base-model.md. Training runs, oldest first: training-report.json.
"""


def write_card(out: Path, report: dict, init_from: Path | None) -> None:
    """The model card and the chain of training reports (this run after the one it continued)."""
    runs = []
    if init_from is not None and (init_from / "training-report.json").is_file():
        runs = json.loads((init_from / "training-report.json").read_text())["runs"]
    runs.append({k: v for k, v in report.items() if k != "out"})
    write_text_atomic(out / "training-report.json", json.dumps({"runs": runs}, indent=2) + "\n")
    write_text_atomic(out / "README.md", CARD)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    vae, vae_meta = stage_vae(args)
    if args.stage == "vae":
        return 0
    report = dit_stage.train_and_write(
        vae,
        out=args.out,
        seed=args.seed,
        steps=args.dit_steps,
        batch=args.dit_batch,
        pool=args.pool,
        frames=FRAMES,
        size=SIZE,
        init_from=args.init_from,
    )
    report["vae"] = vae_meta
    report["total_seconds"] = time.perf_counter() - t0
    report["command"] = " ".join(sys.argv)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "report.json").write_text(json.dumps(report, indent=2))
    write_card(args.out, report, args.init_from)
    print(json.dumps({k: v for k, v in report.items() if k != "vae"}, indent=2))
    print(f"total wall time {report['total_seconds']:.0f}s (stage 1 {vae_meta['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
