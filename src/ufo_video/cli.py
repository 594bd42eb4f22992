"""`ufo-video` command line: one subcommand group per concern, each registered by its module.

User errors (`UfoError`) print one clear message and exit with status 2; `--debug` shows the
stack trace. Anything else is a bug and propagates with its trace. SIGTERM and SIGINT stop any
command cleanly with status 128 + the signal's number (`process.stop`; training saves first).

Start-up is kept fast: only the module of the command being run is imported and registered;
every other command gets a placeholder parser with its one-line help (so `ufo-video --help`
lists them all without importing torch). `tests/test_cli_fast.py` checks that the placeholder
help equals each module's own help and that no heavy library is imported while parsing.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence

from ufo_video.errors import UfoError

# command -> (module defining `register(subparsers)` with `func=` defaults, its one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("ufo_video.demo",
             "run the end-to-end demo on a tiny model (CPU; about 2.5 minutes on 2 shared cores; --quick: a short smoke run)"),
    "model": ("ufo_video.models.cli", "make a tiny test model, check a model folder, plan training memory"),
    "data": ("ufo_video.data.cli", "check, preview and summarise a training dataset"),
    "train": ("ufo_video.train.cli", "train a UFO (or ordinary) LoRA"),
    "generate": ("ufo_video.infer.cli", "text/image-to-video with optional LoRAs (UFOs)"),
    "sweep": ("ufo_video.infer.cli", "LoRA checkpoints x weights over prompts x seeds: grid, paired statistics, recommended setting"),
    "eval": ("ufo_video.eval.cli", "score videos: temporal consistency, flicker and motion (CPU, no weights; --metrics: VBench's)"),
    "lora": ("ufo_video.lora.cli", "inspect, convert, combine LoRA files; bake them into a model"),
    "bench": ("ufo_video.bench.cli",
              "measure the performance targets (trainer overhead, cache, loader, LoRA, step cache)"),
    "ui": ("ufo_video.ui.cli", "local web app: generate, compare weights, sweep checkpoints, check data, watch training"),
}  # fmt: skip


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not a top-level option)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] | None = None, full: bool = False) -> argparse.ArgumentParser:
    """The parser for `argv`: the named command's real parser, placeholders for the others.
    `full=True` registers every module (tests compare the placeholders with the real help)."""
    parser = argparse.ArgumentParser(
        prog="ufo-video",
        description="Train and apply UFO (Uniform Frame Organizer) LoRAs for video diffusion transformers.",
    )
    parser.add_argument("--debug", action="store_true", help="show stack traces for user errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = _command_of(list(argv) if argv is not None else [])
    real = {module for module, _ in COMMANDS.values()} if full else ({COMMANDS[wanted][0]} if wanted else set())
    registered: set[str] = set()
    for name, (module, help_text) in COMMANDS.items():
        if module in real:
            if module not in registered:
                importlib.import_module(module).register(sub)
                registered.add(module)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _quiet_libraries() -> None:
    """Keep library chatter (progress bars while loading tiny shards, config warnings) out of
    user output; our own messages say what happens. Environment only: transformers reads
    HF_HUB_DISABLE_PROGRESS_BARS when it is first imported, so nothing is imported here."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_libraries()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    from ufo_video.process import children, stop

    previous = {sig: signal.getsignal(sig) for sig in stop.SIGNALS}
    stop.install()  # SIGTERM and SIGINT stop every command cleanly, also when started with SIGINT ignored
    children.watch_parent_from_env()  # started by the UI: end when it ends
    try:
        result = args.func(args)
    except UfoError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return stop.exit_code(signum)
    finally:
        for sig, handler in previous.items():  # in-process callers (tests, notebooks) get theirs back
            if handler is not None and threading.current_thread() is threading.main_thread():
                signal.signal(sig, handler)
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
