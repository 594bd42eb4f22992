"""Real-scale cases: host memory of loading, decode cost of a late clip, planning 100k entries,
bytes per cached caption.

load_memory: peak RSS above the process's baseline while `load_model` loads a transformer of the
real model's width (48 heads x 64 = 3072) with few layers, from an fp32 file into bf16 (the cast
the former loader doubled), over the size of the component in bf16 (target <= 1.2). The former
loader (read every tensor, then cast the whole dict) is measured side by side and reported in
the notes, as is `model check`'s tensor-by-tensor finiteness pass.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch

from ufo_video.bench.measure import Spread, peak_memory
from ufo_video.bench.results import MB, CaseResult, Target
from ufo_video.bench.workspace import Workspace

# real width (12B: 48 heads x 64, time embedding 512), few layers: >= 1 GB in bf16 at "small"
WIDE = {"small": dict(heads=48, head_dim=64, layers=3, time_embed_dim=512, text_hidden=1024),
        "smoke": dict(heads=4, head_dim=16, layers=1, time_embed_dim=16, text_hidden=16)}


def _wide_model(ws: Workspace):
    if "wide_model" not in ws._cache:
        from ufo_video.bench.presets import write_model

        preset = dataclasses.replace(ws.preset, **WIDE[ws.preset.name])
        ws._cache["wide_model"] = write_model(preset, ws.root / "wide-model")
    return ws._cache["wide_model"]


def _former_load(folder, dtype: torch.dtype) -> torch.nn.Module:
    """What `load_strict` did before streaming: every tensor read into one dict, then a second,
    cast dict, then the assignment (kept here only for the side-by-side figure)."""
    from ufo_video.models.registry import adapter_for
    from ufo_video.models.weights import find_weight_files, read_state_dict

    module = adapter_for(folder).build_meta(folder)["transformer"]
    state = read_state_dict(find_weight_files(folder / "transformer"))
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=True)
    return module


def case_load_memory(ws: Workspace) -> CaseResult:
    from ufo_video.models.registry import load_model
    from ufo_video.models.weights import check_finite, count_parameters, find_weight_files

    folder = _wide_model(ws)
    dtype = torch.bfloat16
    files = find_weight_files(folder / "transformer")
    file_bytes = sum(f.stat().st_size for f in files)

    def new() -> int:
        model = load_model(folder, dtype=dtype, components=("transformer",))
        return count_parameters(model.transformer)

    def old() -> int:
        return count_parameters(_former_load(folder, dtype))

    rounds = max(1, min(ws.rounds, 3))
    peaks_new, peaks_old, peaks_check, secs_new, secs_old = [], [], [], [], []
    params = 0
    for r in range(rounds):
        for name in (("new", "old") if r % 2 == 0 else ("old", "new")):
            t0 = time.perf_counter()
            peak, params = peak_memory(new if name == "new" else old, ws.device if ws.device.type != "cuda" else torch.device("cpu"))
            (secs_new if name == "new" else secs_old).append(time.perf_counter() - t0)
            (peaks_new if name == "new" else peaks_old).append(peak)
        peak, _ = peak_memory(lambda: check_finite(files, str(folder)), torch.device("cpu"))
        peaks_check.append(peak)
    size = params * 2
    if None in peaks_new:
        raise RuntimeError("load_memory needs a peak-memory method (Linux /proc or psutil)")
    ratio = Spread.of([p / size for p in peaks_new])
    old_ratio = statistics.median(p / size for p in peaks_old)
    check_ratio = statistics.median(p / size for p in peaks_check)
    return CaseResult(
        "load_memory", f"host memory of loading a {params / 1e6:.0f} M-parameter transformer of real width "
        f"(fp32 file, {file_bytes / MB:.0f} MB) into bf16",
        "size of the component in bf16", "peak RSS above baseline during load_model", ratio, Target("<=", 1.2),
        None, Spread.of(secs_new), size, int(statistics.median(peaks_new)), unit="peak bytes B / bytes A",
        notes=[f"former loader (whole dict, then a cast copy): ratio {old_ratio:.2f}, "
               f"{statistics.median(secs_old):.2f} s; streaming: {statistics.median(secs_new):.2f} s",
               f"model check's finiteness pass (every tensor read once): ratio {check_ratio:.3f}"],
        details={"parameters": params, "file_bytes": file_bytes, "peaks_new": peaks_new, "peaks_former": peaks_old,
                 "peaks_check": peaks_check, "former_ratio": old_ratio, "check_ratio": check_ratio,
                 "seconds_former": secs_old},
    )  # fmt: skip


# ----------------------------------------------------------------------------- seeking

SEEK = {"small": dict(frames=5_100, start=5_000, clip=49, gop=30), "smoke": dict(frames=160, start=100, clip=9, gop=12)}


def _long_video(ws: Workspace, frames: int, gop: int):
    """A long 128x128 H.264 video with a keyframe every `gop` frames (typical camera/web encodes
    put one every 1-2 s; x264's default of 250 would make any seek cost up to 250 decodes)."""
    key = f"long-video-{frames}-{gop}"
    if key not in ws._cache:
        import av
        import numpy as np

        path = ws.root / f"{key}.mp4"
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=24)
            stream.width = stream.height = 128
            stream.pix_fmt = "yuv420p"
            stream.codec_context.gop_size = gop
            stream.options = {"crf": "18", "preset": "ultrafast"}
            for i in range(frames):
                img = np.roll(base, i, axis=1)  # moving texture: every frame differs
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        ws._cache[key] = path
    return ws._cache[key]


def case_seek_cost(ws: Workspace) -> CaseResult:
    from ufo_video.bench.measure import interleave
    from ufo_video.data import media

    s = SEEK[ws.preset.name]
    path = _long_video(ws, s["frames"], s["gop"])
    limits = media.Limits()

    def clip(start: int):
        return lambda: media.decode_video_frames(path, list(range(start, start + s["clip"])), limits)

    timing = interleave(clip(0), clip(s["start"]), ws.rounds, ws.device, inner=3, warmup=ws.warmup)
    real = media.SEEK_MIN_FRAMES
    media.SEEK_MIN_FRAMES = 10**12  # the former decoder: every clip from the first frame
    try:
        former = interleave(clip(0), clip(s["start"]), max(1, min(ws.rounds, 3)), ws.device, warmup=0)
    finally:
        media.SEEK_MIN_FRAMES = real
    former_ratio = statistics.median(former.ratios)
    peak_a, _ = peak_memory(clip(0), ws.device)
    peak_b, _ = peak_memory(clip(s["start"]), ws.device)
    return CaseResult.from_timing(
        "seek_cost", f"decoding a {s['clip']}-frame clip at frame {s['start']} of a {s['frames']}-frame video "
        f"(128x128 H.264, keyframe every {s['gop']} frames) vs the same clip at frame 0",
        "clip at frame 0", f"clip at frame {s['start']}", timing, Target("<=", 1.5), peak_bytes_a=peak_a,
        peak_bytes_b=peak_b,
        notes=[f"former decoder (from frame 0 every time): ratio {former_ratio:.1f}",
               f"after a keyframe seek up to {s['gop'] - 1} frames before the clip are decoded and dropped"],
        details={"former_ratios": former.ratios, **s},
    )  # fmt: skip


# ----------------------------------------------------------------------------- planning at 100k

PLAN_SIZES = {"small": (10_000, 100_000), "smoke": (200, 2_000)}


def _synthetic_metadata(ws: Workspace, n: int):
    """`n` entries (half videos, half images, three aspect ratios) pointing at empty files in
    folders of 1,000, with every header memoised as if probed: planning is what is timed."""
    import json

    from ufo_video.data import plan
    from ufo_video.data.media import MediaInfo
    from ufo_video.data.metadata import read_records

    root = ws.root / f"plan-{n}"
    meta = root / "metadata.json"
    if not meta.is_file():
        records = []
        for i in range(n):
            kind = "video" if i % 2 else "image"
            rel = f"d{i // 1000:03d}/{'clip' if kind == 'video' else 'img'}{i}.{'mp4' if kind == 'video' else 'png'}"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).touch()
            records.append({"file_path": rel, "text": f"caption {i}", "type": kind})
        meta.write_text(json.dumps(records))
    cfg = ws.train_config(meta, data__enable_bucket=True, data__clip_mode="video", data__video_sample_n_frames=9,
                          data__dataloader_num_workers=0, train__train_batch_size=2)
    limits = plan.limits_of(cfg.data)
    sizes = ((64, 64), (48, 80), (80, 48))
    for i, e in enumerate(read_records(meta)):
        path = root / e["file_path"]
        st = path.stat()
        h, w = sizes[i % 3]
        info = (MediaInfo("video", w, h, 240, 24.0, 10.0) if e["type"] == "video" else MediaInfo("image", w, h, 1))
        plan._PROBE_MEMO[(str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, limits)] = info
    return cfg


def case_plan_scale(ws: Workspace) -> CaseResult:
    from ufo_video.bench.measure import ABTiming
    from ufo_video.data import plan
    from ufo_video.data.loader import build_train_loader

    small, large = PLAN_SIZES[ws.preset.name]
    cfgs = {n: _synthetic_metadata(ws, n) for n in (small, large)}

    def first_epoch(n: int):
        return lambda: len(build_train_loader(cfgs[n], seed=0, epoch=0))

    import gc

    def timed_build(n: int, repeat: int) -> float:
        gc.collect()  # the same collector state before each side (the larger build leaves more garbage)
        t0 = time.perf_counter()
        for _ in range(repeat):
            first_epoch(n)()
        return (time.perf_counter() - t0) / repeat

    sa, sb = [], []
    inner = 3  # the small side is short: a mean of 3 builds, so one scheduling hiccup weighs less
    for r in range(ws.rounds):
        for n, out in (((small, sa), (large, sb)) if r % 2 == 0 else ((large, sb), (small, sa))):
            out.append(timed_build(n, inner if n == small else 1))
    with plan.sample_list_per_run():  # the trainer's scope: later epochs reuse the sample list
        first_epoch(large)()
        t0 = time.perf_counter()
        batches = len(build_train_loader(cfgs[large], seed=0, epoch=1))
        later = time.perf_counter() - t0
    peak_a, _ = peak_memory(first_epoch(small), ws.device)
    peak_b, _ = peak_memory(first_epoch(large), ws.device)
    plan._PROBE_MEMO.clear()
    timing = ABTiming(sa, sb)
    return CaseResult.from_timing(
        "plan_scale", f"building the loader (metadata read, paths resolved and stat'ed, plan) for {large:,} entries "
        f"vs {small:,}, headers memoised",
        f"{small:,} entries", f"{large:,} entries", timing, Target("<=", 1.2 * large / small), peak_bytes_a=peak_a,
        peak_bytes_b=peak_b,
        notes=[f"linear in N would be {large / small:g}; {large:,} entries take {statistics.median(sb):.2f} s",
               f"a later epoch of a run (sample list reused, batch order planned): {later:.2f} s for "
               f"{batches:,} batches"],
        details={"later_epoch_seconds": later, "entries": [small, large]},
    )  # fmt: skip


# ----------------------------------------------------------------------------- bytes per caption


def case_caption_bytes(ws: Workspace) -> CaseResult:
    """Bytes the latent cache stores per caption (text embedding + mask, shards on disk) over the
    bytes of the padded tensors `encode_text` returns; a report, not a target."""
    from ufo_video.bench.cases_train import _train_data
    from ufo_video.data.cache import cache_dir_of, text_items, text_kind, text_names
    from ufo_video.data.cache_build import build_cache
    from ufo_video.data.cache_keys import model_fingerprints
    from ufo_video.data.cache_store import CacheStore

    meta = _train_data(ws)
    cfg = ws.train_config(meta, data__cache_dir=str(ws.root / "caption-cache"))
    t0 = time.perf_counter()
    report = build_cache(cfg, epochs=1, progress=False)
    seconds = time.perf_counter() - t0
    store = CacheStore(cache_dir_of(cfg), writable=False)
    fp = model_fingerprints(cfg.model.pretrained_model_name_or_path, cfg.model.weight_dtype)
    texts = sorted({""} | {r for r in _captions(meta)})
    padded = 0
    for text in texts:
        for key in text_items(fp.text, text, text_names(cfg)):
            t = store.get(key)
            padded += t.numel() * t.element_size()
    kinds = tuple(f"{text_kind(name)}-" for name in text_names(cfg))
    shards = [p for p in (cache_dir_of(cfg) / "shards").iterdir() if p.name.startswith(kinds)]
    stored = sum(p.stat().st_size for p in shards)
    per_stored, per_padded = stored / len(texts), padded / len(texts)
    ratio = Spread.of([per_stored / per_padded])
    return CaseResult(
        "caption_bytes", f"latent cache: bytes per cached caption ({len(texts)} captions, text encoder of the preset)",
        "padded encode_text output per caption", "stored per caption (shards on disk)", ratio, Target("report"),
        peak_bytes_a=int(per_padded), peak_bytes_b=int(per_stored), unit="bytes B / bytes A",
        notes=[f"{per_stored:,.0f} B stored vs {per_padded:,.0f} B padded per caption (shard headers included)",
               "trailing rows that are exactly zero (the mask's padding; embeddings of encoders that zero padded "
               "positions) are not stored; hidden states at padded positions are data for a transformer without a "
               "text mask and are kept, so training from the cache stays bitwise equal to training without it",
               "12B text stack: 256 x 3584 bf16 = 1.84 MB per caption padded; its hidden states at padded "
               "positions are not zero, so only the mask (256 x int64 = 2 KB) shrinks there"],
        details={"captions": len(texts), "stored_bytes": stored, "padded_bytes": padded, "cache_seconds": seconds,
                 "texts_encoded": report.texts_encoded},
    )  # fmt: skip


def _captions(meta) -> list[str]:
    import json

    return [r.get("text", "") for r in json.loads(meta.read_text())]
