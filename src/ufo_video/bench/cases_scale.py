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
