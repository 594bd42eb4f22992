"""`ufo-video` command line: one subcommand group per concern, each registered by its module.

User errors (`UfoError`) print one clear message and exit with status 2; `--debug` shows the
stack trace. Anything else is a bug and propagates with its trace.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from ufo_video.errors import UfoError

# Each module defines `register(subparsers)` adding its subcommands with `func=` defaults.
COMMAND_MODULES = (
    "ufo_video.demo",
    "ufo_video.models.cli",
    "ufo_video.data.cli",
    "ufo_video.train.cli",
    "ufo_video.infer.cli",
    "ufo_video.eval.cli",
    "ufo_video.lora.cli",
    "ufo_video.bench.cli",
    "ufo_video.ui.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ufo-video",
        description="Train and apply UFO (Uniform Frame Organizer) LoRAs for video diffusion transformers.",
    )
    parser.add_argument("--debug", action="store_true", help="show stack traces for user errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _quiet_libraries() -> None:
    """Keep library chatter (progress bars while loading tiny shards, config warnings) out of
    user output; our own messages say what happens."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except UfoError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
