"""`ufo-video ui [--model DIR] [--host 127.0.0.1] [--port 7860] [--out DIR] [--share]`.

Gradio (and torch) are imported only when the command runs, so `ufo-video --help` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ufo_video.ui.defaults import DEFAULT_MODEL


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ui",
        help="local web app: generate, compare weights, sweep checkpoints, check data, watch training",
        description="Serve the ufo-video web app on this machine (http://HOST:PORT). Only the output folder and "
        "the files you upload are served; no public link unless --share.",
    )
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="default model folder (default: the shipped tiny base)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--out", type=Path, default=Path("ui-out"), help="folder for every output (default ui-out)")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    p.set_defaults(func=_ui)


def _ui(args: argparse.Namespace) -> int:
    from ufo_video.errors import UfoError

    if not 1 <= args.port <= 65535:
        raise UfoError(f"--port {args.port}: give a port between 1 and 65535")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UfoError("the web app needs Gradio: pip install 'gradio>=6,<7' (scripts/setup_env.sh installs it)") from None
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        probe = args.out / ".ufo-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UfoError(f"--out {args.out}: cannot write there ({exc.strerror or exc})") from None
    from ufo_video.ui.app import build_app, launch

    app = build_app(args.model, args.out)
    print(f"ufo-video ui: http://{args.host}:{args.port}  (outputs in {args.out.resolve()}; Ctrl-C stops)")
    launch(app, args.host, args.port, share=args.share, block=True)
    job = app.ufo_context.train_job
    if job is not None and job.running():
        print(f"stopping the training started from the page (it saves a checkpoint): {job.output_dir}")
        job.stop(wait=120)
    return 0
