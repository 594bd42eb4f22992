"""`ufo-video bench --suite gpu`: the one-shot real-size check for a lent GPU (docs/benchmarks.md).

Per model entry (gpu_plan): build the random bf16 transformer on the device and add the LoRA,
run each training size, free it; run the inference case; then the same training with the base
stored in fp8. Every case runs guarded: the suite's time budget decides whether it starts, an
out-of-memory is recorded and the suite goes on, any other exception is recorded with its
traceback (and makes the command fail at the end) so one broken case never costs the rest of a
15-minute GPU lease. Imports only what random-latent work needs: no PyAV, no pydantic
(`tests/test_bench_gpu.py` checks `sys.modules`), so it runs under the lent machine's python
with diffusers carried as a wheel.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ufo_video.bench import gpu_flops, gpu_models, gpu_report
from ufo_video.bench.measure import host_cpu_name
from ufo_video.bench.gpu_plan import PRESETS, Budget, Entry, GpuPreset, load_entries, size_label, unavailable_reason
from ufo_video.bench.gpu_report import GpuCase
from ufo_video.errors import UfoError

OUTPUTS = ("gpu.json", "gpu.md")
LORA_NAME = "bench"


def check_out_dir(out: Path) -> None:
    """Before any work: DIR is creatable and writable, and holds no earlier results."""
    existing = [n for n in OUTPUTS if (out / n).exists()]
    if existing:
        raise UfoError(f"--out {out}: already holds {', '.join(existing)}; choose a new folder or remove them")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UfoError(f"--out {out}: not writable ({exc.strerror or exc})") from None


def planned_cases(entry: Entry) -> list[tuple[str, str]]:
    """(id, kind) of every case an entry runs, in order (also what a skipped entry lists)."""
    ids: list[tuple[str, str]] = []
    for storage in ("bf16", "fp8") if entry.fp8 else ("bf16",):
        if entry.train:
            ids.append((f"{entry.name}/build-{storage}", f"build-{storage}"))
        kind = f"train-{storage}"
        ids += [(f"{entry.name}/{kind}/{size_label(item.sizes[0])}", kind) for item in entry.train]
        if storage == "bf16" and entry.infer:
            ids.append((f"{entry.name}/infer/{size_label(entry.infer.size)}", "infer"))
    ids += [(f"{entry.name}/memory/{size_label(item.size)}/{c.label}", "memory") for item in entry.memory
            for c in item.configs]
    if entry.infer_swap:
        sw = entry.infer_swap
        ids.append((f"{entry.name}/infer-swap/{size_label(sw.size)}/swap{sw.blocks_to_swap}", "infer-swap"))
    return ids


class Runner:
    def __init__(self, preset: GpuPreset, device: torch.device, budget: Budget, progress: Callable[[str], None]):
        self.preset, self.device, self.budget, self.progress = preset, device, budget, progress
        self.dtype = torch.bfloat16
        self.cases: list[GpuCase] = []
        self.peak_flops = 0.0

    def skip(self, entry: Entry, cid: str, kind: str, reason: str) -> GpuCase:
        case = GpuCase(cid, entry.name, kind, status="skipped", reason=reason)
        self.cases.append(case)
        self.progress(f"{cid}: {reason}")
        return case

    def guarded(self, entry: Entry, cid: str, kind: str, fn: Callable[[], dict]) -> GpuCase:
        if self.budget.exhausted():
            return self.skip(entry, cid, kind, self.budget.skip_reason())
        self.progress(f"{cid}: running ({self.budget.remaining():.0f} s of the budget left)")
        case = GpuCase(cid, entry.name, kind)
        t0 = time.perf_counter()
        oom = False
        try:
            case.metrics = fn()
        except torch.cuda.OutOfMemoryError as exc:
            oom, case.status, case.reason = True, "oom", f"out of memory: {str(exc).splitlines()[0][:300]}"
        except Exception as exc:  # noqa: BLE001 - recorded with its traceback; the command fails at the end
            case.status, case.reason = "error", f"{type(exc).__name__}: {exc}"
            case.metrics = {"traceback": traceback.format_exc()}
            self.progress(case.metrics["traceback"])
        if oom:
            gpu_models.free(self.device)
        case.seconds = time.perf_counter() - t0
        self.cases.append(case)
        self.progress(f"{cid}: {case.status} in {case.seconds:.1f} s")
        return case

    def run_entry(self, entry: Entry, adapters: dict[str, type], work: Path) -> None:
        reason = unavailable_reason(entry, adapters)
        if reason:
            for cid, kind in planned_cases(entry):
                self.skip(entry, cid, kind, reason)
            return
        adapter_cls = adapters[entry.family]
        folder = gpu_models.config_folder(entry, work)
        for storage in ("bf16", "fp8") if entry.fp8 else ("bf16",):
            if entry.train:
                self._storage(entry, adapter_cls, folder, storage)
            if storage == "bf16" and entry.infer:
                self._infer(entry, adapter_cls, folder)
        self._memory(entry, adapter_cls, folder)

    def _memory(self, entry: Entry, adapter_cls: type, folder: Path) -> None:
        from ufo_video.bench.gpu_memory import run_infer_swap_case, run_memory_case

        for item in entry.memory:
            for c in item.configs:
                deadline = self.budget.case_deadline(self.preset.train_cap_s)
                self.guarded(entry, f"{entry.name}/memory/{size_label(item.size)}/{c.label}", "memory",
                             lambda item=item, c=c, deadline=deadline: run_memory_case(
                                 entry, adapter_cls, folder, item.size, c, self.preset, self.device, self.dtype,
                                 deadline, self.budget.clock))  # fmt: skip
        if entry.infer_swap:
            sw = entry.infer_swap
            deadline = self.budget.case_deadline(self.preset.infer_cap_s)
            self.guarded(entry, f"{entry.name}/infer-swap/{size_label(sw.size)}/swap{sw.blocks_to_swap}", "infer-swap",
                         lambda: run_infer_swap_case(entry, adapter_cls, folder, sw.size, sw.blocks_to_swap,
                                                     self.preset, self.device, self.dtype, deadline, self.budget.clock))

    def _storage(self, entry: Entry, adapter_cls: type, folder: Path, storage: str) -> None:
        from ufo_video.bench.gpu_train import run_train_case

        held: dict[str, Any] = {}

        def build() -> dict:
            model = gpu_models.build(entry, adapter_cls, folder, self.device, self.dtype)
            t0 = time.perf_counter()
            if storage == "fp8":
                gpu_models.enable_fp8_base(model.transformer, self.dtype)  # before the LoRA, as the trainer does
            params = gpu_models.add_lora(model, LORA_NAME, entry.lora_rank, entry.lora_alpha)
            held.update(model=model, params=params)
            on_device = torch.cuda.memory_allocated(self.device) / 1e9 if self.device.type == "cuda" else "n/a on cpu"
            weights = sum(p.numel() * p.element_size() for p in model.transformer.parameters() if not p.requires_grad)
            lora = sum(p.numel() for p in params)
            return {"params": model.params, "build_s": model.build_s, "lora_s": time.perf_counter() - t0,
                    "base_weights_gb": weights / 1e9,
                    # fp32 LoRA weights + gradients + AdamW's two moments: a floor under the training peak
                    "lora_state_gb": lora * (4 + 4 + 8) / 1e9,
                    "lora_params": lora, "lora_rank": entry.lora_rank,
                    "lora_alpha": entry.lora_alpha, "lora_targets": entry.lora_targets,
                    "storage": "float8_e4m3fn (layerwise casting, bf16 compute)" if storage == "fp8" else "bf16",
                    "device_gb": on_device}

        built = self.guarded(entry, f"{entry.name}/build-{storage}", f"build-{storage}", build)
        for item in entry.train:
            cid = f"{entry.name}/train-{storage}/{size_label(item.sizes[0])}"
            if built.status != "ok":
                why = built.reason if built.status == "skipped" else f"build-{storage} failed ({built.status})"
                self.skip(entry, cid, f"train-{storage}", why)
                continue
            deadline = self.budget.case_deadline(self.preset.train_cap_s)
            self.guarded(entry, cid, f"train-{storage}", lambda item=item, deadline=deadline: run_train_case(
                held["model"], held["params"], item, self.preset, self.device, self.dtype, self.peak_flops,
                deadline, self.budget.clock))
        held.clear()
        gpu_models.free(self.device)

    def _infer(self, entry: Entry, adapter_cls: type, folder: Path) -> None:
        from ufo_video.bench.gpu_infer import run_infer_case

        deadline = self.budget.case_deadline(self.preset.infer_cap_s)
        self.guarded(entry, f"{entry.name}/infer/{size_label(entry.infer.size)}", "infer",
                     lambda: run_infer_case(entry, adapter_cls, folder, self.preset, self.device, self.dtype,
                                            deadline, self.budget.clock))
        gpu_models.free(self.device)


def _device_info(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"type": "cuda", "name": props.name, "memory_gb": round(props.total_memory / 1e9, 1),
                "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}
    return {"type": "cpu", "name": "cpu", "memory_gb": "n/a"}


def _versions() -> dict[str, str]:
    import accelerate
    import diffusers
    import peft
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__, "accelerate": accelerate.__version__}


def run_gpu_suite(out: Path, preset_name: str = "real", models: list[str] | None = None,
                  device: torch.device | None = None, command: str = "",
                  progress: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
                  clock: Callable[[], float] = time.monotonic,
                  adapters: dict[str, type] | None = None,
                  budget_s: float | None = None, table: Path | None = None) -> tuple[list[GpuCase], dict[str, Any]]:
    """Run the suite, write gpu.json and gpu.md into `out`; returns (cases, header)."""
    if preset_name not in PRESETS:
        raise UfoError(f"--preset {preset_name!r}: choose one of {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preset.name == "real" and device.type != "cuda":
        raise UfoError("--preset real builds 12-14B models and needs a CUDA device; use --preset tiny on the CPU")
    if budget_s is not None:
        if budget_s <= 0:
            raise UfoError(f"--budget {budget_s:g}: give a positive number of seconds")
        preset = dataclasses.replace(preset, budget_s=float(budget_s))
    entries = load_entries(preset, models, table) if table else load_entries(preset, models)
    check_out_dir(out)
    if adapters is None:
        from ufo_video.models.registry import ADAPTERS as adapters
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    budget = Budget(preset.budget_s, clock)
    runner = Runner(preset, device, budget, progress)
    runner.peak_flops = gpu_flops.measure_peak(device, preset.calibration_n)
    with tempfile.TemporaryDirectory(prefix="ufo-gpu-bench-") as work:
        for entry in entries:
            runner.run_entry(entry, adapters, Path(work))
    from ufo_video.bench.gpu_memory import fill_ratios

    fill_ratios(runner.cases)
    for case in runner.cases:
        entry = next(e for e in entries if e.name == case.entry)
        gpu_report.judge(case, entry.targets, preset.judged)
    header = {
        "suite": "gpu", "preset": preset.name, "command": command, "started_utc": started,
        "seconds": budget.elapsed(), "budget_s": preset.budget_s, "device": _device_info(device),
        "host_cpu": host_cpu_name(), "versions": _versions(), "calibration_n": preset.calibration_n,
        "peak_tflops": runner.peak_flops / 1e12, "flop_formula": gpu_flops.FORMULA,
        "nominal_formula": gpu_flops.NOMINAL_FORMULA, "entries": [e.name for e in entries],
    }  # fmt: skip
    gpu_report.write(out, runner.cases, header)
    return runner.cases, header
