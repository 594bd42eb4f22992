"""How many CPU threads torch uses, for every compute command (`--threads`, `model.threads`).

torch's default is one thread per core. On a machine other processes share, that
oversubscribes the CPU and every kernel waits on its slowest thread (measured on a busy 2-core
machine: generate and train ran 9-25x slower than with one thread). The default here is the
CPUs this process may use minus the ones the load average says are busy, at least one. Results
can differ in the last bits between thread counts, so the count used is recorded (sidecars,
training summary).
"""

from __future__ import annotations

import os

from ufo_video.errors import UfoError


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_chosen: int | None = None  # the load-based default, measured once per process


def default_threads() -> int:
    """OMP_NUM_THREADS when set (the user's explicit choice); else the CPUs available minus those
    busy with other work (1-minute load average), at least 1. The load is read once per process,
    so every run in one process (a notebook, the test suite) uses the same count and gives the
    same numbers; for bitwise-repeatable CPU runs across processes give --threads."""
    global _chosen
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env)
    if _chosen is None:
        cpus = available_cpus()
        try:
            busy = int(os.getloadavg()[0])
        except OSError:
            busy = 0
        _chosen = max(1, min(cpus, cpus - busy))
    return _chosen


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (None: `default_threads()`); returns the count in use."""
    if threads is not None and threads < 1:
        raise UfoError(f"--threads must be at least 1, got {threads}")
    import torch

    n = threads if threads is not None else default_threads()
    torch.set_num_threads(n)
    return n


def threads_override(flag: int | None) -> list[str]:
    """`--threads N` as the config override `model.threads=N` (checked here so the error names the flag)."""
    if flag is None:
        return []
    if flag < 1:
        raise UfoError(f"--threads must be at least 1, got {flag}")
    return [f"model.threads={flag}"]
