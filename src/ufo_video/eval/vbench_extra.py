"""Optional: VBench's own temporal-quality dimensions, only when VBench and its weights are local.

The UFO paper reports VBench scores. VBench is not a dependency of ufo-video (it needs several
networks), and VBench downloads any missing weight with wget as soon as a dimension is
requested. To never download, we request only the dimensions whose files already sit in
VBench's cache folder ($VBENCH_CACHE_DIR, else ~/.cache/vbench, as VBench resolves it) and run
VBench in its `local=True`, `mode="custom_input"` way. Everything else is reported as
"not available" with the reason; this never fails an evaluation.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from pathlib import Path

# Temporal-quality dimensions (UFO paper) → files VBench needs in its cache with local=True.
VBENCH_TEMPORAL_DIMS: dict[str, tuple[str, ...]] = {
    "subject_consistency": ("dino_model/facebookresearch_dino_main", "dino_model/dino_vitbase16_pretrain.pth"),
    "background_consistency": ("clip_model/ViT-B-32.pt",),
    "temporal_flickering": (),
    "motion_smoothness": ("amt_model/amt-s.pth",),
    "dynamic_degree": ("raft_model/models/raft-things.pth",),
}


def vbench_cache_dir() -> Path:
    return Path(os.environ.get("VBENCH_CACHE_DIR") or Path.home() / ".cache" / "vbench")


def vbench_availability() -> dict:
    """{"available": bool, "reason": str, "dimensions": [runnable dims], "missing": {dim: [paths]}}
    without importing VBench (importing it is slow and pulls in its networks' code)."""
    if importlib.util.find_spec("vbench") is None:
        return {"available": False, "reason": "not available: the vbench package is not installed",
                "dimensions": [], "missing": {}}
    cache = vbench_cache_dir()
    missing = {
        dim: [str(cache / f) for f in files if not (cache / f).exists()]
        for dim, files in VBENCH_TEMPORAL_DIMS.items()
    }
    runnable = [dim for dim, paths in missing.items() if not paths]
    missing = {dim: paths for dim, paths in missing.items() if paths}
    reason = "available" if not missing else f"partly available: weights missing under {cache} for {sorted(missing)}"
    return {"available": True, "reason": reason, "dimensions": runnable, "missing": missing}


def run_vbench(video: str | Path, dimensions: list[str], device: str = "cpu") -> dict[str, float]:
    """Score one video with VBench on the given (locally available) dimensions."""
    unknown = set(dimensions) - set(VBENCH_TEMPORAL_DIMS)
    if unknown:
        raise ValueError(f"not VBench temporal dimensions: {sorted(unknown)}")
    if not dimensions:
        return {}
    from vbench import VBench

    with tempfile.TemporaryDirectory(prefix="ufo-vbench-") as tmp:
        out = Path(tmp) / "results"
        bench = VBench(device, None, str(out))
        bench.evaluate(videos_path=str(video), name="ufo_eval", dimension_list=list(dimensions),
                       local=True, mode="custom_input")
        results = json.loads((out / "ufo_eval_eval_results.json").read_text())
    # VBench stores (mean over videos, per-video details) per dimension.
    return {dim: float(results[dim][0]) for dim in dimensions}
