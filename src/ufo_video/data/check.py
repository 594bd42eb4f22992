"""``data check`` and ``data stats``: find every problem of a dataset before a long run does.

Check decodes every entry completely (videos to their last frame) in isolated worker processes
with ``data.decode_timeout``, so a file that hangs or crashes a decoder is reported as
``unreadable`` instead of stopping the check. Problem codes:

- file level: invalid_json, missing_field, wrong_type (the metadata file itself; check stops)
- entry level: missing_file, unreadable, zero_frames, too_short (moving clips only, with what
  would fit), unsupported_format, empty_caption, outside_root, duplicate, too_large
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ufo_video.config import UfoConfig
from ufo_video.data import plan as planning
from ufo_video.data.media import MediaInfo, task_check
from ufo_video.data.metadata import MetadataError, load_entries
from ufo_video.data.sampling import short_fix_hint, span
from ufo_video.data.workers import map_isolated

BLOCKING = ("outside_root", "unsupported_format", "missing_file", "duplicate")


@dataclass
class Problem:
    index: int | None
    file_path: str
    problem: str
    message: str


@dataclass
class CheckReport:
    entries: int
    ok: int
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"entries": self.entries, "ok": self.ok, "problems": [asdict(p) for p in self.problems]}

    def format(self) -> str:
        lines = [f"{self.entries} entries, {self.ok} ok, {len(self.problems)} problems"]
        counts: dict[str, int] = {}
        for p in self.problems:
            counts[p.problem] = counts.get(p.problem, 0) + 1
        if counts:
            lines.append("  " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
        for p in self.problems[:50]:
            where = "metadata" if p.index is None else f"entry {p.index}"
            lines.append(f"  [{p.problem}] {where} {p.file_path}: {p.message}")
        if len(self.problems) > 50:
            lines.append(f"  ... {len(self.problems) - 50} more (use --json for all)")
        return "\n".join(lines)


def _too_short(info: MediaInfo, cfg: UfoConfig) -> str | None:
    d = cfg.data
    if d.clip_mode != "video":
        return None
    step = float(d.video_sample_stride)
    if d.video_sample_fps and info.fps:
        step = max(1.0, info.fps / d.video_sample_fps)
    need = span(d.video_sample_n_frames, step)
    if info.frames >= need:
        return None
    return (f"{info.frames} frames; {d.video_sample_n_frames} frames at step {step:g} need {need}; "
            f"{short_fix_hint(info.frames, d.video_sample_n_frames, max(1, int(step)))} "
            f"(data.short_video_policy={d.short_video_policy})")


def check_dataset(meta: str | Path, root: str | Path, cfg: UfoConfig, workers: int = 2,
                  progress: bool = False) -> CheckReport:
    try:
        entries = load_entries(meta, root, cfg.data.allow_outside_paths)
    except MetadataError as exc:
        return CheckReport(0, 0, [Problem(exc.index, str(meta), exc.code, str(exc))])
    problems = {e.index: [Problem(e.index, e.file_path, c, m) for c, m in e.problems] for e in entries}
    todo = [e for e in entries if not any(c in BLOCKING for c, _ in e.problems)]
    limits = planning.limits_of(cfg.data)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="checking", unit="file")
    outcomes = map_isolated(task_check, [(str(e.path), e.type, limits) for e in todo], workers,
                            cfg.data.decode_timeout, progress=bar.update if bar else None)
    if bar:
        bar.close()
    for e, out in zip(todo, outcomes):
        if not out.ok:
            problems[e.index].append(Problem(e.index, e.file_path, out.code, out.reason))
        elif out.value.type == "video" and (msg := _too_short(out.value, cfg)):
            problems[e.index].append(Problem(e.index, e.file_path, "too_short", msg))
    flat = [p for e in entries for p in problems[e.index]]
    ok = sum(1 for e in entries if not problems[e.index])
    return CheckReport(len(entries), ok, flat)


def _summary(values: list[float], unit: str = "") -> str:
    if not values:
        return "-"
    return f"min {min(values):g}{unit}, median {statistics.median(values):g}{unit}, max {max(values):g}{unit}"


def dataset_stats(cfg: UfoConfig, workers: int = 2) -> dict:
    """Counts per type, size/duration/fps summaries and the epoch-0 bucket assignment (headers only)."""
    d = cfg.data
    entries = load_entries(d.train_data_meta, d.train_data_dir, d.allow_outside_paths)
    rules = planning.data_rules(cfg.model.pretrained_model_name_or_path)
    samples, failures, notices = planning.build_samples(
        [e for e in entries if not any(c in ("outside_root",) for c, _ in e.problems)], d, workers, rules)
    infos = [s.info for s in samples.values()]
    vids = [i for i in infos if i.type == "video"]
    batches = planning.plan_batches(samples, d, cfg.train.train_batch_size, cfg.train.seed, 0, rules) if samples else []
    types: dict[str, int] = {}
    for e in entries:
        types[e.type or "unknown"] = types.get(e.type or "unknown", 0) + 1
    return {
        "entries": len(entries),
        "types": types,
        "usable": len(samples),
        "width": _summary([i.width for i in infos], " px"),
        "height": _summary([i.height for i in infos], " px"),
        "video_frames": _summary([i.frames for i in vids]),
        "video_duration": _summary([round(i.duration, 2) for i in vids if i.duration], " s"),
        "video_fps": _summary([round(i.fps, 2) for i in vids if i.fps]),
        "buckets_epoch0": planning.describe_buckets(batches),
        "batches_epoch0": len(batches),
        "unusable": [{"file_path": p, "reason": r} for p, r in failures],
        "notices": [{"file_path": p, "message": m} for p, m in notices],
    }


def format_stats(stats: dict) -> str:
    lines = [f"{stats['entries']} entries ({', '.join(f'{k}: {v}' for k, v in stats['types'].items())}), "
             f"{stats['usable']} usable"]
    for key in ("width", "height", "video_frames", "video_duration", "video_fps"):
        lines.append(f"  {key.replace('_', ' ')}: {stats[key]}")
    lines.append(f"  buckets (height x width x frames -> batches, epoch 0): {stats['buckets_epoch0']}")
    for item in stats["unusable"]:
        lines.append(f"  unusable {item['file_path']}: {item['reason']}")
    for item in stats["notices"]:
        lines.append(f"  notice {item['file_path']}: {item['message']}")
    return "\n".join(lines)
