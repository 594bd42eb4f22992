"""`ufo-video train CONFIG [key=value ...]` (also under `accelerate launch -m ufo_video train ...`)."""

from __future__ import annotations

import argparse
import json
import os
import shlex

from ufo_video.cli_intermixed import intermixed

# keys that say how this invocation starts; the resume command replaces them
_START_KEYS = ("resume_from_checkpoint", "train.resume_from_checkpoint", "overwrite_output_dir",
               "train.overwrite_output_dir")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = intermixed(sub.add_parser(
        "train",
        help="train a UFO (or ordinary) LoRA",
        description="Train a LoRA from a config file; any key can be overridden: learning_rate=2e-4 "
        "train.max_train_steps=3000. Multi-GPU: accelerate launch -m ufo_video train CONFIG ... "
        "An output_dir belongs to one run: a folder with another run's checkpoints is refused unless "
        "resume_from_checkpoint=latest (continue it) or overwrite_output_dir=true (start over, deleting them).",
    ))
    p.add_argument("config", help="TOML/YAML config, e.g. configs/train_ufo.toml")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                   help="config overrides, before, between or after the options")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (model.threads; default: free CPUs by the load average)")
    p.set_defaults(func=_train)


def resume_command(config: str, overrides: list[str], threads: int | None = None) -> str:
    """The command that continues this run. scripts/train_ufo.sh passes its own command line in
    UFO_SCRIPT_COMMAND (a JSON list), so the hint repeats what the user typed."""
    script = os.environ.get("UFO_SCRIPT_COMMAND")
    if script:
        words = [w for w in json.loads(script) if not w.lstrip("-").startswith(("resume_from_checkpoint", "overwrite_output_dir"))]
        return shlex.join([*words, "--resume_from_checkpoint=latest"])
    kept = [o for o in overrides if o.split("=", 1)[0].strip() not in _START_KEYS]
    options = ["--threads", str(threads)] if threads is not None else []
    return shlex.join(["ufo-video", "train", *options, config, *kept, "resume_from_checkpoint=latest"])


def _train(args: argparse.Namespace) -> int:
    from ufo_video.config import load_config
    from ufo_video.process import stop
    from ufo_video.train.loop import train

    from ufo_video.threads import threads_override

    overrides = list(args.overrides) + threads_override(args.threads)
    cfg = load_config(args.config, overrides)
    result = train(cfg)
    if result.interrupted:
        if result.state_saved:
            print(f"resume with: {resume_command(args.config, list(args.overrides), args.threads)}")
        elif result.steps:
            print("this run saved the LoRA only (train.save_state=false), so it cannot be resumed exactly; "
                  "set save_state=true to make a stop (Ctrl-C, SIGTERM) resumable")
    return stop.exit_code(result.interrupted) if result.interrupted else 0
