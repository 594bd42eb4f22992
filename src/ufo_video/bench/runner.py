"""Runs the selected bench cases in one process and collects everything the report needs."""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ufo_video.bench import cases_data, cases_infer, cases_quant, cases_scale, cases_train
from ufo_video.bench.measure import host_cpu_name, memory_method, prepare_cpu_memory_accounting
from ufo_video.bench.presets import PRESETS
from ufo_video.bench.results import CaseResult
from ufo_video.bench.workspace import Workspace
from ufo_video.errors import UfoError

CASES: dict[str, Callable[[Workspace], CaseResult]] = {
    "trainer_step": cases_train.case_trainer_step,
    "cached_step": cases_train.case_cached_step,
    "loader": cases_data.case_loader,
    "loader_images": cases_data.case_loader_images,
    "static_memory": cases_data.case_static_memory,
    "lora_fused": cases_infer.case_lora_fused,
    "lora_unfused": cases_infer.case_lora_unfused,
    "weight_change": cases_infer.case_weight_change,
    "step_cache": cases_infer.case_step_cache,
    "load_memory": cases_scale.case_load_memory,
    "seek_cost": cases_scale.case_seek_cost,
    "plan_scale": cases_scale.case_plan_scale,
    "caption_bytes": cases_scale.case_caption_bytes,
    "fp8_error": cases_quant.case_fp8_error,
}


def select(only: list[str] | None) -> list[str]:
    if not only:
        return list(CASES)
    unknown = [n for n in only if n not in CASES]
    if unknown:
        raise UfoError(f"--only: unknown case(s) {', '.join(unknown)}; cases: {', '.join(CASES)}")
    return [n for n in CASES if n in only]


def environment(device: torch.device) -> dict[str, Any]:
    import accelerate
    import av
    import diffusers
    import peft
    import transformers

    machine = {"cpu": host_cpu_name(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "platform": platform.platform(), "device": str(device)}
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
    versions = {"python": sys.version.split()[0], "torch": torch.__version__, "diffusers": diffusers.__version__,
                "transformers": transformers.__version__, "peft": peft.__version__,
                "accelerate": accelerate.__version__, "av": av.__version__}
    return {"machine": machine, "versions": versions}


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_bench(names: list[str], *, smoke: bool, repeats: int | None, device: torch.device,
              threads: int | None = None, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run `names` (in CASES order) and return the JSON payload (results as dicts, plus the
    `CaseResult` objects under "_results" for printing)."""
    preset = PRESETS["smoke" if smoke else "small"]
    rounds = repeats if repeats is not None else preset.repeats
    if rounds < 1:
        raise UfoError(f"--repeats must be at least 1, got {rounds}")
    prepare_cpu_memory_accounting()
    started, load_before = time.time(), _load()
    results: list[CaseResult] = []
    if threads is not None and threads < 1:
        raise UfoError(f"--threads must be at least 1, got {threads}")
    previous = torch.get_num_threads()
    if threads is None and smoke:
        # smoke tensors are tiny: one intra-op thread avoids thread hand-offs that dominate (and,
        # on a loaded CI box, stall) kernels of a few microseconds
        threads = 1
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        env = environment(device)
        with tempfile.TemporaryDirectory(prefix="ufo-bench-") as tmp:
            ws = Workspace(preset, Path(tmp), device, rounds, warmup=0 if smoke else 1)
            for name in names:
                progress(f"bench: {name} ({rounds} round{'s' if rounds > 1 else ''}, preset {preset.name})")
                t0 = time.perf_counter()
                result = CASES[name](ws)
                result.details["case_seconds"] = round(time.perf_counter() - t0, 2)
                results.append(result)
    finally:
        torch.set_num_threads(previous)
    return {
        "preset": preset.as_dict(), "smoke": smoke, "rounds": rounds, "cases_run": names,
        **env, "memory_method": memory_method(device),
        "load_average_before": load_before, "load_average_after": _load(),
        "started_unix": started, "seconds": round(time.time() - started, 1),
        "cases": [r.as_dict() for r in results], "_results": results,
    }  # fmt: skip
