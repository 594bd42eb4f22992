#!/usr/bin/env python
"""Train the shipped tiny EasyAnimate-V5.1-architecture base model (src/ufo_video/assets/tiny-base).

Reproduce (2 CPU cores, fp32; see docs/tiny-base-model.md for the measured time):

    python scripts/train_tiny_base.py --out src/ufo_video/assets/tiny-base

Stage 1 trains the magvit VAE as an autoencoder on synthetic moving-shape clips and freezes it
(saved under --work, reused with --reuse-vae); stage 2 trains the InP transformer from scratch with
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
from safetensors.torch import load_file, save_file

from ufo_video.models.tiny_base_training import dit_stage, vae_stage

FRAMES, SIZE = 9, 64
# The causal VAE treats frames 1-4 and 5-8 alike, so it trains on 5-frame clips (half the cost).
VAE_TRAIN_FRAMES = 5
VAE_TRAIN_CROP = 32
VAE_BLOCKS = [8, 16, 32, 32]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("src/ufo_video/assets/tiny-base"))
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ufo-tiny-base-work", help="stage-1 VAE and logs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on a shared machine)")
    p.add_argument("--reuse-vae", action="store_true", help="skip stage 1 when --work holds its VAE")
    p.add_argument("--latent", type=int, default=4, help="VAE latent channels")
    p.add_argument("--vae-steps", type=int, default=800)
    p.add_argument("--vae-batch", type=int, default=8)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--vae-blocks", default=",".join(map(str, VAE_BLOCKS)), help="VAE block_out_channels")
    p.add_argument("--dit-steps", type=int, default=2000)
    p.add_argument("--dit-batch", type=int, default=16)
    p.add_argument("--pool", type=int, default=512, help="clips encoded once for stage 2")
    p.add_argument("--stage", choices=("all", "vae"), default="all")
    return p.parse_args(argv)


def stage_vae(args: argparse.Namespace) -> tuple[torch.nn.Module, dict]:
    weights, meta_path = args.work / "vae.safetensors", args.work / "vae.json"
    blocks = [int(v) for v in args.vae_blocks.split(",")]
    vae = vae_stage.build_vae(args.latent, blocks)
    if args.reuse_vae and weights.is_file():
        vae.load_state_dict(load_file(str(weights)), strict=True)
        meta = json.loads(meta_path.read_text())
        vae.register_to_config(scaling_factor=meta["scaling_factor"])
        print(f"stage 1: reusing {weights} (scaling_factor {meta['scaling_factor']:.4f})")
        return vae.eval(), meta
    torch.manual_seed(args.seed)
    vae = vae_stage.build_vae(args.latent, blocks)
    t0 = time.perf_counter()
    losses = vae_stage.train_vae(vae, steps=args.vae_steps, batch=args.vae_batch, lr=args.vae_lr, kl_weight=1e-4,
                                 frames=VAE_TRAIN_FRAMES, size=SIZE, crop=VAE_TRAIN_CROP, seed=args.seed)  # fmt: skip
    factor = vae_stage.calibrate_scaling(vae, frames=FRAMES, size=SIZE, seed=args.seed)
    meta = {"scaling_factor": factor, "losses": losses, "seconds": time.perf_counter() - t0, "steps": args.vae_steps}
    args.work.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(weights))
    meta_path.write_text(json.dumps(meta, indent=2))
    print(f"stage 1 done in {meta['seconds']:.0f}s; scaling_factor {factor:.4f}; losses {losses}")
    return vae, meta


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
    )
    report["vae"] = vae_meta
    report["total_seconds"] = time.perf_counter() - t0
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "vae"}, indent=2))
    print(f"total wall time {report['total_seconds']:.0f}s (stage 1 {vae_meta['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
