"""`ufo-video eval VIDEO... [--json] [--out FILE] [--max-frames N] [--vbench] [--metrics LIST [--backbones DIR]]`.

Scores each video with the CPU metrics of `ufo_video.eval.metrics` and prints one row per video
(a table, or JSON with --json). --out always writes the JSON report. All paths are checked
before any work starts, so a typo fails at once (exit 2) rather than after minutes of scoring.
A file that exists but cannot be decoded does not stop the others: every readable video is
scored, the unreadable ones are listed (report "unreadable", and on stderr) and the exit status
is 1; when none could be read it is 2. `--metrics` adds the field's (VBench's) metrics of
`ufo_video.eval.field_metrics`; one whose network is not on this machine is reported as
unavailable with the reason (exit status unchanged), never replaced by another number.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ufo_video.atomic import write_json_atomic
from ufo_video.errors import UfoError

# Table columns: metric key → (header, format).
_COLUMNS = {
    "ssim": ("ssim", "{:.4f}"),
    "psnr_db": ("psnr_db", "{:.2f}"),
    "warp_error": ("warp_err", "{:.4f}"),
    "brightness_flicker": ("bright_flk", "{:.4f}"),
    "sharpness_flicker": ("sharp_flk", "{:.4f}"),
    "flow_px": ("flow_px", "{:.3f}"),
    "flow_norm": ("flow_norm", "{:.5f}"),
    "dynamic_pairs": ("dyn_pairs", "{:.3f}"),
    "is_dynamic": ("dynamic", "{}"),
}


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval",
        help="score videos: temporal consistency, flicker and motion (CPU, no weights; --metrics: VBench's)",
        description="Per video: consecutive-frame SSIM/PSNR, flow-warped error, brightness and sharpness "
        "flicker, optical-flow motion and a VBench-style dynamic flag. A UFO LoRA should raise the "
        "consistency numbers and lower the motion ones as its weight grows.",
    )
    ev.add_argument("videos", nargs="+", type=Path, metavar="VIDEO", help="mp4 / gif files")
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    ev.add_argument("--out", type=Path, help="also write the JSON report to this file")
    ev.add_argument("--max-frames", type=int, help="score only the first N frames of each video")
    ev.add_argument("--threads", type=int, metavar="N",
                    help="OpenCV CPU threads (default: free CPUs by the load average)")
    ev.add_argument("--vbench", action="store_true",
                    help="also run VBench's temporal dimensions if vbench and its weights are installed locally")
    ev.add_argument("--metrics", metavar="LIST",
                    help="also score the field's metrics with VBench's definitions, comma-separated from "
                    "subject_consistency (DINO), background_consistency (CLIP), temporal_flickering, "
                    "motion_smoothness (a RAFT-based proxy), dynamic_degree (RAFT); definitions in --json")
    ev.add_argument("--backbones", type=Path, metavar="DIR",
                    help="take the networks for --metrics from DIR only: DIR/dino and DIR/clip are "
                    "transformers folders (save_pretrained), DIR/raft holds raft_large.safetensors or "
                    "raft_small.safetensors (torchvision state_dict). Default: the Hugging Face cache "
                    "(facebook/dino-vitb16, openai/clip-vit-base-patch32) and the torch hub cache "
                    "(raft_large_C_T_V1). Nothing is ever downloaded")
    ev.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="where the --metrics networks run (auto: cuda when available)")
    ev.set_defaults(func=_eval)


def evaluate_videos(paths: list[Path], max_frames: int | None = None, use_vbench: bool = False,
                    field=None) -> dict:
    """The JSON report: {"videos": [...], "definitions": {...}, "vbench": {...}}, plus
    "field_metrics" (see `FieldScorer.describe`) and each row's "field_metrics" when `field`
    (a `FieldScorer`) is given."""
    from ufo_video.eval.metrics import DEFINITIONS, evaluate_frames
    from ufo_video.eval.vbench_extra import run_vbench, vbench_availability
    from ufo_video.eval.video_io import read_video

    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UfoError(f"video file(s) not found: {', '.join(missing)}")
    vbench = vbench_availability()
    vbench["requested"] = use_vbench
    rows, unreadable = [], []
    for path in paths:
        try:
            frames, fps = read_video(path, max_frames)
        except UfoError as exc:
            unreadable.append({"path": str(path), "error": str(exc)})
            continue
        if len(frames) < 2:
            unreadable.append({"path": str(path), "error": f"{path}: has {len(frames)} frame; temporal metrics need at least 2"})
            continue
        row = {
            "path": str(path),
            "frames": int(frames.shape[0]),
            "size": [int(frames.shape[1]), int(frames.shape[2])],
            "fps": fps,
            "metrics": evaluate_frames(frames, fps=fps),
        }
        if use_vbench and vbench["dimensions"]:
            row["vbench"] = run_vbench(path, vbench["dimensions"])
        if field is not None:
            row["field_metrics"], notes = field.score(frames, fps)
            if notes:
                row["field_notes"] = notes
        rows.append(row)
    if not rows:
        raise UfoError("no video could be scored:\n  " + "\n  ".join(u["error"] for u in unreadable))
    report = {"videos": rows, "unreadable": unreadable, "definitions": DEFINITIONS, "vbench": vbench}
    if field is not None:
        report["field_metrics"] = field.describe()
    return report


def format_table(report: dict) -> str:
    """Plain aligned table, one row per video, plus the direction of each column."""
    from ufo_video.eval.metrics import MOTION_METRICS

    field = report.get("field_metrics")
    field_names = field["requested"] if field else []
    headers = ["video", "frames", "HxW"] + [h for h, _ in _COLUMNS.values()] + [_FIELD_HEADERS[n] for n in field_names]
    lines = []
    for row in report["videos"]:
        m = row["metrics"]
        cells = [row["path"], str(row["frames"]), f"{row['size'][0]}x{row['size'][1]}"]
        cells += [fmt.format(m[key]) for key, (_, fmt) in _COLUMNS.items()]
        cells += [_field_cell(row["field_metrics"][n]) for n in field_names]
        lines.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in lines]
    defs = report["definitions"]
    consistency = {k: h for k, (h, _) in _COLUMNS.items() if k not in MOTION_METRICS}
    higher = [h for k, h in consistency.items() if defs[k]["better"] == "higher"]
    lower = [h for k, h in consistency.items() if defs[k]["better"] == "lower"]
    motion = [h for k, (h, _) in _COLUMNS.items() if k in MOTION_METRICS]
    out.append("")
    out.append(f"more consistent = higher {', '.join(higher)}; lower {', '.join(lower)}")
    out.append(f"more motion = higher {', '.join(motion)} (definitions: --json)")
    if field:
        out.append("field metrics (VBench's definitions, higher = more consistent / more motion): "
                   + ", ".join(f"{_FIELD_HEADERS[n]} = {n}" for n in field_names))
        if "motion_smoothness" in field_names:
            out.append("motion_smooth* is a proxy (RAFT flow interpolation), not VBench's AMT-based number")
        for name, reason in field["unavailable"].items():
            out.append(f"{name}: {reason}")
    vb = report["vbench"]
    if vb["requested"]:
        if vb["dimensions"]:
            for row in report["videos"]:
                scores = ", ".join(f"{k} {v:.4f}" for k, v in row.get("vbench", {}).items())
                out.append(f"VBench {row['path']}: {scores}")
        if vb["reason"] != "available":
            out.append(f"VBench: {vb['reason']}")
    return "\n".join(out)


_FIELD_HEADERS = {
    "subject_consistency": "subject_cons",
    "background_consistency": "bg_cons",
    "temporal_flickering": "t_flicker",
    "motion_smoothness": "motion_smooth*",
    "dynamic_degree": "dyn_degree",
}


def _field_cell(value) -> str:
    if value is None:
        return "n/a"
    return str(value) if isinstance(value, bool) else f"{value:.4f}"


def _eval(args: argparse.Namespace) -> int:
    if args.max_frames is not None and args.max_frames < 2:
        raise UfoError(f"--max-frames must be at least 2 (temporal metrics compare frames), got {args.max_frames}")
    import cv2

    from ufo_video.threads import default_threads

    if args.threads is not None and args.threads < 1:
        raise UfoError(f"--threads must be at least 1, got {args.threads}")
    threads = args.threads or default_threads()
    cv2.setNumThreads(threads)
    if args.out is not None:  # before minutes of scoring, not after
        from ufo_video.writable import ensure_writable

        ensure_writable(args.out.parent, "--out folder")
    field = None
    if args.metrics is not None:
        from ufo_video.eval.field_metrics import FieldScorer, parse_metric_names

        names = parse_metric_names(args.metrics)
        if args.backbones is not None and not args.backbones.is_dir():
            raise UfoError(f"--backbones {args.backbones}: folder not found")
        missing = [str(p) for p in args.videos if not p.is_file()]
        if missing:  # before loading networks
            raise UfoError(f"video file(s) not found: {', '.join(missing)}")
        import torch

        if args.device == "cuda" and not torch.cuda.is_available():
            raise UfoError("--device cuda: no CUDA device is available here; use --device cpu")
        torch.set_num_threads(threads)
        field = FieldScorer(names, args.backbones, None if args.device == "auto" else args.device)
        for name, reason in field.unavailable.items():
            print(f"note: {name} {reason}", file=sys.stderr)
    elif args.backbones is not None:
        raise UfoError("--backbones is only used with --metrics; add --metrics LIST")
    report = evaluate_videos(list(args.videos), args.max_frames, args.vbench, field)
    if args.vbench and not report["vbench"]["dimensions"]:
        print(f"note: VBench {report['vbench']['reason']}", file=sys.stderr)
    if args.out is not None:
        write_json_atomic(args.out, report, allow_nan=False)
    print(json.dumps(report, indent=2, allow_nan=False) if args.json else format_table(report))
    for bad in report["unreadable"]:
        print(f"error: not scored: {bad['error']}", file=sys.stderr)
    return 1 if report["unreadable"] else 0
