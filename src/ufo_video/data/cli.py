"""`ufo-video data check | preview | stats | cache`.

``cache`` takes the training CONFIG and ``key=value`` overrides (see ``data/cache.py``). The others
take the METADATA file, ``--root`` (default: the metadata file's folder, the guide's
layout) and the usual ``--config FILE`` plus ``key=value`` overrides, so frame counts, sizes and
limits are exactly those the training run will use.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ufo_video.atomic import DiskFullError, write_atomic, write_text_atomic
from ufo_video.cli_intermixed import IntermixedParser
from ufo_video.errors import UfoError


THREADS_HELP = "torch CPU threads (model.threads; default: free CPUs by the load average)"


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="check, preview and summarise a training dataset")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", parser_class=IntermixedParser)
    dsub.required = True

    check = dsub.add_parser("check", help="decode every entry and report problems (exit 1 if any)")
    _common(check)
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--workers", type=int, default=None, help="decode processes (default data.dataloader_num_workers, min 1)")
    check.set_defaults(func=_check)

    preview = dsub.add_parser("preview", help="write the first clips exactly as the trainer sees them")
    _common(preview)
    preview.add_argument("--out", type=Path, required=True, help="output folder")
    preview.add_argument("--n", type=int, default=8, help="number of clips")
    preview.add_argument("--epoch", type=int, default=0)
    preview.add_argument("--overwrite", action="store_true", help="replace an earlier preview in --out")
    preview.set_defaults(func=_preview)

    stats = dsub.add_parser("stats", help="counts, resolutions, durations and bucket assignment")
    _common(stats)
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=_stats)

    cache = dsub.add_parser(
        "cache", help="encode latents and text embeddings for data.cache_latents (only what is missing)",
        description="Precompute the VAE latents (and InP conditioning) of every clip the planned epochs use and "
        "the text embeddings of every caption and of \"\", into data.cache_dir (default "
        "<train_data_dir>/.ufo_cache). Pass the same config and overrides as the training run. A shard "
        "that was deleted or truncated since is dropped from the index and its entries encoded again.",
    )
    cache.add_argument("config", type=Path, help="the training config (.toml / .yaml)")
    cache.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as for `ufo-video train`")
    cache.add_argument("--epochs", type=int, default=None,
                       help="epochs to cover (default: the run's, from max_train_steps or num_train_epochs)")
    cache.add_argument("--num-processes", type=int, default=1, help="processes (GPUs) the training will use")
    cache.add_argument("--prune", action="store_true", help="then delete cached entries this run does not use")
    cache.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)
    cache.set_defaults(func=_cache)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("metadata", type=Path, help="metadata .json / .jsonl / .csv")
    p.add_argument("--root", type=Path, default=None, help="dataset root (default: the metadata file's folder)")
    p.add_argument("--config", type=Path, default=None, help="config file (.toml / .yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. video_sample_n_frames=17")
    p.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)


def _config(args: argparse.Namespace):
    from ufo_video.config import load_config

    from ufo_video.threads import apply_threads, threads_override

    cfg = load_config(args.config, list(args.overrides) + threads_override(args.threads))
    apply_threads(cfg.model.threads)
    root = args.root if args.root is not None else args.metadata.parent
    cfg.data.train_data_meta = str(args.metadata)
    cfg.data.train_data_dir = str(root)
    return cfg


def _check(args: argparse.Namespace) -> int:
    from ufo_video.data.check import check_dataset

    cfg = _config(args)
    workers = args.workers if args.workers is not None else max(1, cfg.data.dataloader_num_workers)
    report = check_dataset(args.metadata, cfg.data.train_data_dir, cfg, workers=workers, progress=not args.json)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 1 if report.problems else 0


def _stats(args: argparse.Namespace) -> int:
    from ufo_video.data.check import dataset_stats, format_stats

    cfg = _config(args)
    stats = dataset_stats(cfg, workers=max(1, cfg.data.dataloader_num_workers))
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def _write_png(path: Path, frame, exclusive: bool) -> None:
    from PIL import Image

    from ufo_video.media_write import to_uint8_frames

    write_atomic(path, lambda tmp: Image.fromarray(to_uint8_frames(frame)[0]).save(tmp, format="PNG"), exclusive=exclusive)


def _preview(args: argparse.Namespace) -> int:
    from ufo_video.data.loader import build_train_loader
    from ufo_video.media_write import write_video

    from ufo_video.writable import ensure_writable

    cfg = _config(args)
    if args.n < 1:
        raise UfoError(f"--n must be at least 1, got {args.n}")
    ensure_writable(args.out, "--out folder")
    earlier = sorted(args.out.glob("[0-9][0-9][0-9][0-9]-entry*"))
    if earlier and not args.overwrite:
        raise UfoError(f"--out {args.out} holds an earlier preview ({earlier[0].name}, ... {len(earlier)} files); "
                       "pass --overwrite to replace it, or choose another folder")  # fmt: skip
    for old in earlier:  # --overwrite: the earlier preview goes, so no stale clip is left among the new ones
        old.unlink()
    loader = build_train_loader(cfg, seed=cfg.train.seed, epoch=args.epoch)
    written = 0
    for batch in loader:
        for clip, text, idx in zip(batch["pixel_values"], batch["texts"], batch["indices"]):
            if written >= args.n:
                break
            frames = ((clip + 1) / 2).permute(1, 0, 2, 3)  # [F, 3, H, W] in [0, 1]
            stem = f"{written:04d}-entry{idx}"
            only = not args.overwrite  # a preview running at the same time into --out is never replaced
            try:
                if frames.shape[0] == 1:
                    _write_png(args.out / f"{stem}.png", frames, exclusive=only)
                else:
                    write_video(frames, args.out / f"{stem}.mp4", fps=cfg.infer.fps, exclusive=only)
                write_text_atomic(args.out / f"{stem}.txt", text, exclusive=only)
            except DiskFullError as exc:
                raise exc.with_context(f"the {written} clip(s) before it are complete in {args.out}",
                                       "run again with --overwrite") from exc.__cause__  # fmt: skip
            written += 1
        if written >= args.n:
            break
    print(f"wrote {written} clips to {args.out} ({len(loader.failures)} failed samples skipped)")
    return 0


def _cache(args: argparse.Namespace) -> int:
    from ufo_video.config import load_config
    from ufo_video.data.cache_build import build_cache

    from ufo_video.threads import apply_threads, threads_override

    cfg = load_config(args.config, list(args.overrides) + threads_override(args.threads))
    apply_threads(cfg.model.threads)
    report = build_cache(cfg, epochs=args.epochs, num_processes=args.num_processes, prune=args.prune)
    print(report.format())
    return 0
