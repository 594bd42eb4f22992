"""`ufo-video ui [--model DIR] [--host 127.0.0.1] [--port 7860] [--out DIR] [--share] [--threads N]
[--auth USER:PASSWORD | --no-auth] [--allow-dir DIR ...]`.

Gradio (and torch) are imported only when the command runs, so `ufo-video --help` stays fast.
The page reads files by typed paths and starts trainings: served beyond this machine (a host other
than loopback, or a share link) it needs a login (`--auth`) or an explicit `--no-auth`, and typed
paths stay inside the allowed folders (`--allow-dir`) in every case.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
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
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (default: free CPUs by the load average, as every command); in the sidecars")
    login = p.add_mutually_exclusive_group()
    login.add_argument("--auth", metavar="USER:PASSWORD",
                       help="ask for this login before the page opens (needed with a non-loopback --host or --share)")
    login.add_argument("--no-auth", action="store_true",
                       help="serve beyond this machine without a login (anyone who reaches the port can use the page)")
    p.add_argument("--allow-dir", action="append", type=Path, default=[], metavar="DIR",
                   help="a folder typed paths (model, LoRAs, data, configs, output_dir) may name, repeatable; "
                   "always allowed: the working directory, --out and --model")  # fmt: skip
    p.set_defaults(func=_ui)


def is_loopback(host: str) -> bool:
    """True when `host` is reachable from this machine only (localhost, 127.x, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve to anything


def login(args: argparse.Namespace) -> tuple[str, str] | None:
    """The (user, password) for Gradio's login, or None; a page served beyond this machine without
    --auth or --no-auth is refused (one line)."""
    from ufo_video.errors import UfoError

    if args.auth is not None:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            raise UfoError("--auth: give USER:PASSWORD (both non-empty)")
        return user, password
    beyond = not is_loopback(args.host) or args.share
    where = f"--host {args.host}" if not is_loopback(args.host) else "--share"
    if beyond and not args.no_auth:
        raise UfoError(f"{where} serves the page beyond this machine, where it reads files and starts trainings: "
                       "give --auth USER:PASSWORD (or --no-auth to serve it without a login)")  # fmt: skip
    if beyond:
        print(f"warning: {where} with --no-auth: anyone who reaches the page can use it (read files in the allowed "
              "folders, generate, start trainings)", file=sys.stderr)  # fmt: skip
    return None


def _ui(args: argparse.Namespace) -> int:
    from ufo_video.errors import UfoError

    if not 1 <= args.port <= 65535:
        raise UfoError(f"--port {args.port}: give a port between 1 and 65535")
    if args.threads is not None and args.threads < 1:
        raise UfoError(f"--threads must be at least 1, got {args.threads}")
    auth = login(args)
    for folder in args.allow_dir:
        if not folder.expanduser().is_dir():
            raise UfoError(f"--allow-dir {folder}: folder not found")
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

    app = build_app(args.model, args.out, args.allow_dir, args.threads)
    ctx = app.ufo_context
    print(f"ufo-video ui: http://{args.host}:{args.port}  (outputs in {ctx.out_dir}; Ctrl-C stops)")
    print(f"  torch threads: {ctx.threads}; typed paths allowed in: {', '.join(str(a) for a in ctx.allowed)}")
    launch(app, args.host, args.port, share=args.share, block=True, auth=auth)
    job = app.ufo_context.train_job
    if job is not None and job.running():
        print(f"stopping the training started from the page (it saves a checkpoint): {job.output_dir}")
        job.stop(wait=120)
    return 0
