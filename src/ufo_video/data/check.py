"""``data check`` and ``data stats``: find every problem of a dataset before a long run does.

Check decodes every entry completely (videos to their last frame) in isolated worker processes
with ``data.decode_timeout``, so a file that hangs or crashes a decoder is reported as
``unreadable`` instead of stopping the check. Problem codes:

- file level: invalid_json, missing_field, wrong_type (the metadata file itself; check stops)
- entry level: missing_file, unreadable, zero_frames, too_short (moving clips only, with what
  would fit), unsupported_format, empty_caption, outside_root, duplicate, too_large

Short moving clips follow the trainer's rule (`data.sampling.plan_moving` with
`data.short_video_policy`): a clip the policy cannot use (``skip``, or nothing fits) is a
``too_short`` problem; a clip it adapts (lower stride, fewer frames) is a notice saying what the
trainer will do, the same notice `train` prints. Counts add up: every entry is counted once, as
ok, with problems, or not checked (when the metadata file itself is broken).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ufo_video.config import UfoConfig
from ufo_video.data import plan as planning
from ufo_video.data.media import MediaInfo, task_check
from ufo_video.data.metadata import MetadataError, load_entries
from ufo_video.data.sampling import plan_moving, short_fix_hint
from ufo_video.data.skips import SHOWN, more_line
from ufo_video.data.workers import map_isolated

BLOCKING = ("outside_root", "unsupported_format", "missing_file", "duplicate")


@dataclass
class Problem:
    index: int | None
    file_path: str
    problem: str
    message: str


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@dataclass
class CheckReport:
    entries: int
    ok: int
    problems: list[Problem] = field(default_factory=list)
    notices: list[Problem] = field(default_factory=list)  # usable entries the trainer adapts (short clips)
    unchecked: int = 0  # entries not checked because the metadata file itself is broken

    @property
    def with_problems(self) -> int:
        return len({p.index for p in self.problems if p.index is not None})

    def to_dict(self) -> dict:
        return {"entries": self.entries, "ok": self.ok, "with_problems": self.with_problems,
                "unchecked": self.unchecked, "problems": [asdict(p) for p in self.problems],
                "notices": [asdict(p) for p in self.notices]}  # fmt: skip

    def format(self) -> str:
        head = f"{_plural(self.entries, 'entry').replace('entrys', 'entries')}: {self.ok} ok, {self.with_problems} with problems"
        if self.unchecked:
            head += f", {self.unchecked} not checked (fix the metadata file first)"
        lines = [f"{head} ({_plural(len(self.problems), 'problem')})"]
        counts: dict[str, int] = {}
        for p in self.problems:
            counts[p.problem] = counts.get(p.problem, 0) + 1
        if counts:
            lines.append("  " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
        for code in sorted(counts):  # the first few of each kind: 10,000 missing files are one kind
            of_code = [p for p in self.problems if p.problem == code]
            for p in of_code[:SHOWN]:
                where = "metadata" if p.index is None else f"entry {p.index}"
                lines.append(f"  [{p.problem}] {where} {p.file_path}: {p.message}")
            if len(of_code) > SHOWN:
                lines.append(f"  [{code}] ... and {len(of_code) - SHOWN} more (--json lists all)")
        for n in self.notices[:SHOWN]:
            lines.append(f"  [notice] entry {n.index} {n.file_path}: {n.message}")
        if len(self.notices) > SHOWN:
            lines.append(f"  [notice] ... and {len(self.notices) - SHOWN} more (--json lists all)")
        return "\n".join(lines)


def moving_clip_rule(info: MediaInfo, cfg: UfoConfig) -> tuple[str | None, str | None]:
    """(too_short problem, notice) for a video under clip_mode=video, by the trainer's own rule."""
    d = cfg.data
    if d.clip_mode != "video":
        return None, None
    plan = plan_moving(info.frames, info.fps, d.video_sample_n_frames, d.video_sample_stride, d.video_sample_fps,
                       d.short_video_policy)  # fmt: skip
    if plan is not None:
        return None, plan.notice and f"{plan.notice} (data.short_video_policy={d.short_video_policy})"
    step = float(d.video_sample_stride)
    if d.video_sample_fps and info.fps:
        step = max(1.0, info.fps / d.video_sample_fps)
    return (f"{info.frames} frames; {d.video_sample_n_frames} frames at step {step:g} do not fit and "
            f"data.short_video_policy={d.short_video_policy} cannot use it; "
            f"{short_fix_hint(info.frames, d.video_sample_n_frames, max(1, int(step)))}"), None


def check_dataset(meta: str | Path, root: str | Path, cfg: UfoConfig, workers: int = 2,
                  progress: bool = False) -> CheckReport:
    try:
        entries = load_entries(meta, root, cfg.data.allow_outside_paths)
    except MetadataError as exc:
        found = exc.entries or [(exc.index, exc.code, str(exc))]
        problems = [Problem(i, str(meta), code, msg) for i, code, msg in found]
        total = exc.total if exc.total is not None else 0
        bad = len({i for i, _, _ in found if i is not None})
        return CheckReport(total, 0, problems, unchecked=max(0, total - bad))
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
    notices = []
    for e, out in zip(todo, outcomes):
        if not out.ok:
            problems[e.index].append(Problem(e.index, e.file_path, out.code, out.reason))
        elif out.value.type == "video":
            short, notice = moving_clip_rule(out.value, cfg)
            if short:
                problems[e.index].append(Problem(e.index, e.file_path, "too_short", short))
            elif notice:
                notices.append(Problem(e.index, e.file_path, "notice", notice))
    flat = [p for e in entries for p in problems[e.index]]
    ok = sum(1 for e in entries if not problems[e.index])
    return CheckReport(len(entries), ok, flat, [n for n in notices if not problems[n.index]])


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
        "buckets": _bucket_rows(batches, samples),
        "upscaled": _upscaled(batches, samples),
        "types": types,
        "usable": len(samples),
        "width": _summary([i.width for i in infos], " px"),
        "height": _summary([i.height for i in infos], " px"),
        "video_frames": _summary([i.frames for i in vids]),
        "video_duration": _summary([round(i.duration, 2) for i in vids if i.duration], " s"),
        "video_fps": _summary([round(i.fps, 2) for i in vids if i.fps]),
        "buckets_epoch0": planning.describe_buckets(batches),
        "batches_epoch0": len(batches),
        "unusable": [{"file_path": p, "reason": r.removeprefix(f"{p}: ")} for p, r in failures],
        "notices": [{"file_path": p, "message": m} for p, m in notices],
    }


def _scale(sample, bucket) -> float:
    """How much a sample is enlarged to cover its bucket (the loader resizes to cover, then crops)."""
    return max(bucket.height / max(1, sample.info.height), bucket.width / max(1, sample.info.width))


def _bucket_rows(batches: list, samples: dict) -> list[dict]:
    rows: dict[tuple, dict] = {}
    for b in batches:
        key = (b.bucket.height, b.bucket.width, b.bucket.frames)
        row = rows.setdefault(key, {"height": key[0], "width": key[1], "frames": key[2], "batches": 0, "samples": 0,
                                    "upscaled": 0})  # fmt: skip
        row["batches"] += 1
        for i in b.indices:
            if i in samples:
                row["samples"] += 1
                row["upscaled"] += _scale(samples[i], b.bucket) > 1
    return [rows[k] for k in sorted(rows)]


def _upscaled(batches: list, samples: dict) -> list[dict]:
    """Samples smaller than their bucket (epoch 0), largest enlargement first."""
    out, seen = [], set()
    for b in batches:
        for i in b.indices:
            if i in samples and i not in seen and _scale(samples[i], b.bucket) > 1:
                seen.add(i)
                s = samples[i]
                out.append({"file_path": s.entry.file_path, "size": [s.info.height, s.info.width],
                            "bucket": [b.bucket.height, b.bucket.width], "factor": round(_scale(s, b.bucket), 2)})  # fmt: skip
    return sorted(out, key=lambda r: -r["factor"])


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned text columns."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [headers, *rows]]


def format_stats(stats: dict) -> str:
    lines = [f"{stats['entries']} entries ({', '.join(f'{k}: {v}' for k, v in stats['types'].items())}), "
             f"{stats['usable']} usable"]
    for key in ("width", "height", "video_frames", "video_duration", "video_fps"):
        lines.append(f"  {key.replace('_', ' ')}: {stats[key]}")
    rows = [[f"{r['height']}x{r['width']}", str(r["frames"]), str(r["batches"]), str(r["samples"]), str(r["upscaled"])]
            for r in stats["buckets"]]  # fmt: skip
    lines.append(f"  buckets of epoch 0 ({stats['batches_epoch0']} batches):")
    lines += ["    " + line for line in table(["HxW", "frames", "batches", "samples", "upscaled"], rows)]
    up = stats["upscaled"]
    if up:
        worst = up[0]
        lines.append(f"  note: {len(up)} sample{'s are' if len(up) != 1 else ' is'} smaller than {'their' if len(up) != 1 else 'its'} "
                     f"bucket and will be upscaled, up to {worst['factor']:g}x ({worst['file_path']}: "
                     f"{worst['size'][0]}x{worst['size'][1]} -> {worst['bucket'][0]}x{worst['bucket'][1]}); lower "
                     "data.image_sample_size / data.video_sample_size or use larger media")  # fmt: skip
    for key, word, text in (("unusable", "unusable", "reason"), ("notices", "notice", "message")):
        items = stats[key]
        lines += [f"  {word} {item['file_path']}: {item[text]}" for item in items[:SHOWN]]
        if len(items) > SHOWN:
            rest = (item[text] for item in items[SHOWN:])
            lines.append(f"  {word} {more_line(len(items) - SHOWN, rest, '--json lists all')}")
    return "\n".join(lines)
