"""`ufo-video train CONFIG [key=value ...]` (also under `accelerate launch -m ufo_video train ...`)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a UFO (or ordinary) LoRA",
        description="Train a LoRA from a config file; any key can be overridden: learning_rate=2e-4 "
        "train.max_train_steps=3000. Multi-GPU: accelerate launch -m ufo_video train CONFIG ...",
    )
    p.add_argument("config", help="TOML/YAML config, e.g. configs/train_ufo.toml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from ufo_video.config import load_config
    from ufo_video.train.loop import train

    cfg = load_config(args.config, args.overrides)
    result = train(cfg)
    return 130 if result.interrupted else 0
