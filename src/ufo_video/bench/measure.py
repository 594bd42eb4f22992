"""Timing and peak-memory primitives of `ufo-video bench`.

Why ratios, interleaved: the machines this runs on are shared (CI runners, a CPU box with other
jobs), so absolute seconds drift by tens of percent from minute to minute. Each case times its
two sides A and B alternately (A B, then B A, ...) in the same process, and the result is the
median of the per-round ratios B/A with their min/max and inter-quartile range: a load spike
hits both sides of a round, not one side of the whole comparison.

Peak memory:
- CUDA: `torch.cuda.max_memory_allocated` after a reset (exact, allocator-level).
- CPU (Linux): the kernel's peak resident set size (VmHWM) after resetting it through
  `/proc/self/clear_refs` (write "5"), minus the RSS at the start. tracemalloc cannot be used:
  torch allocates tensors outside Python's allocator, so tracemalloc never sees them. glibc
  keeps freed blocks and adapts its mmap threshold upwards, which would hide allocations that
  reuse freed memory; `prepare_cpu_memory_accounting` pins the threshold so every large block is
  an mmap returned to the kernel when freed, and `malloc_trim` runs before each measurement.
- Elsewhere (no /proc): a background thread sampling RSS via psutil when installed, else
  `None` (reported as "n/a", never a made-up number).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

_PROC_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD_BYTES = 256 * 1024

_libc = None


def _glibc():
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name) if name else None
        except OSError:
            lib = None
        _libc = lib if lib is not None and hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else False
    return _libc or None


def prepare_cpu_memory_accounting() -> bool:
    """Pin glibc's mmap threshold (see module doc); False where that is not glibc."""
    lib = _glibc()
    if lib is None:
        return False
    return bool(lib.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def _trim() -> None:
    gc.collect()
    lib = _glibc()
    if lib is not None:
        lib.malloc_trim(0)


def _status_kb(field: str) -> int:
    for line in _PROC_STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _can_reset_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        _status_kb("VmHWM")
        return True
    except (OSError, KeyError):
        return False


class _Sampler(threading.Thread):
    """Fallback: poll RSS every millisecond (misses spikes shorter than that)."""

    def __init__(self, rss: Callable[[], int]):
        super().__init__(daemon=True)
        self.rss, self.peak, self.stop = rss, rss(), threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.001):
            self.peak = max(self.peak, self.rss())


def memory_method(device: torch.device) -> str:
    if device.type == "cuda":
        return "cuda max_memory_allocated"
    if _can_reset_hwm():
        return "VmHWM after clear_refs (peak RSS delta)"
    try:
        import psutil  # noqa: F401

        return "psutil RSS sampled every 1 ms"
    except ImportError:
        return "unavailable"


def peak_memory(fn: Callable[[], object], device: torch.device) -> tuple[int | None, object]:
    """Run `fn` once; returns (extra peak bytes over the memory in use before it, fn's result)."""
    _trim()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before, result
    if _can_reset_hwm():
        before = _status_kb("VmRSS")
        _CLEAR_REFS.write_text("5")
        result = fn()
        return max(0, _status_kb("VmHWM") - before) * 1024, result
    try:
        import psutil
    except ImportError:
        return None, fn()
    proc = psutil.Process()
    sampler = _Sampler(lambda: proc.memory_info().rss)
    before = sampler.peak
    sampler.start()
    try:
        result = fn()
    finally:
        sampler.stop.set()
        sampler.join()
    return max(0, max(sampler.peak, proc.memory_info().rss) - before), result


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call, with the accelerator's queue drained on both ends."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


@dataclass
class Spread:
    median: float
    min: float
    max: float
    q1: float
    q3: float
    values: list[float]

    @classmethod
    def of(cls, values: list[float]) -> "Spread":
        vals = sorted(values)
        if len(vals) >= 2:
            q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive")
        else:
            q1 = q3 = vals[0]
        return cls(statistics.median(vals), vals[0], vals[-1], q1, q3, list(values))

    def as_dict(self) -> dict:
        return {"median": self.median, "min": self.min, "max": self.max, "q1": self.q1, "q3": self.q3,
                "values": self.values}


@dataclass
class ABTiming:
    """Per-round seconds of each side and the per-round ratios B / A."""

    a_seconds: list[float]
    b_seconds: list[float]

    @property
    def ratios(self) -> list[float]:
        return [b / a for a, b in zip(self.a_seconds, self.b_seconds)]


def interleave(a: Callable[[], object], b: Callable[[], object], rounds: int, device: torch.device,
               inner: int = 1, warmup: int = 1) -> ABTiming:
    """Time `a` and `b` alternately for `rounds` rounds (order A B, B A, A B, ...); each
    measurement is the mean of `inner` calls. `warmup` untimed calls of each side come first
    (first-call costs: lazy imports, allocator growth, autotuning)."""
    for _ in range(warmup):
        a()
        b()
    sa, sb = [], []
    for r in range(rounds):
        order = ((a, sa), (b, sb)) if r % 2 == 0 else ((b, sb), (a, sa))
        for fn, out in order:
            out.append(sum(timed(fn, device) for _ in range(inner)) / inner)
    return ABTiming(sa, sb)


def host_cpu_name() -> str:
    """The CPU model name (for the machine line of both suites' reports)."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
