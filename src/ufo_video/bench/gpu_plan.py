"""What `ufo-video bench --suite gpu` measures: presets, model entries, the time budget.

The suite must finish in one lent-GPU call (at most 8 minutes on an H200), so every case runs
under a `Budget`: a case starts only while time is left, its step loop stops early when its own
cap or the suite's deadline is reached (after at least one timed step), and whatever cannot run
is reported as skipped with the reason — never silently dropped.

Model entries come from `assets/gpu-bench-models.json` (see its `_doc`): this package never
names a model family; an entry refers to one by its registry key (`models.registry.ADAPTERS`).
An entry whose family is not registered, or whose configs folder is not shipped, is reported as
skipped. `--preset tiny` takes each entry's `tiny` block (tiny widths and sizes) and runs the same
code on the CPU in seconds, so the real preset never rots untested.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ufo_video.errors import UfoError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TABLE = ASSETS / "gpu-bench-models.json"

Size = tuple[int, int, int]  # frames, height, width


@dataclass(frozen=True)
class GpuPreset:
    name: str
    budget_s: float  # the whole suite
    train_cap_s: float  # one training case (build, LoRA and optimizer excluded)
    infer_cap_s: float  # one inference case (all its sides)
    warmup_steps: int
    timed_steps: int
    infer_steps: int  # denoising steps of one timed generation loop
    infer_rounds: int  # interleaved rounds of each side-by-side ratio
    calibration_n: int  # side of the square bf16 matmul that measures the peak FLOP/s
    judged: bool  # compare with the targets (only meaningful at real size)


PRESETS: dict[str, GpuPreset] = {
    "real": GpuPreset("real", budget_s=450, train_cap_s=45, infer_cap_s=110, warmup_steps=2, timed_steps=5,
                      infer_steps=8, infer_rounds=5, calibration_n=8192, judged=True),
    "tiny": GpuPreset("tiny", budget_s=240, train_cap_s=20, infer_cap_s=40, warmup_steps=1, timed_steps=2,
                      infer_steps=3, infer_rounds=2, calibration_n=256, judged=False),
}  # fmt: skip


@dataclass(frozen=True)
class TrainItem:
    sizes: tuple[Size, ...]  # alternatives, largest first: the first that fits is measured


STORAGES = ("bf16", "fp8", "fp8_scaled")
_CONFIG = re.compile(r"^(bf16|fp8|fp8_scaled)/swap(\d+)(\+offload)?$")


@dataclass(frozen=True)
class MemoryConfig:
    storage: str  # one of STORAGES
    blocks_to_swap: int
    activation_offload: bool

    @property
    def label(self) -> str:
        return f"{self.storage}/swap{self.blocks_to_swap}" + ("+offload" if self.activation_offload else "")


def parse_config(text: str, where: str) -> MemoryConfig:
    """`fp8_scaled/swap32+offload` -> MemoryConfig; anything else is an error naming `where`."""
    m = _CONFIG.match(text)
    if not m:
        raise UfoError(f"{where}: {text!r} is not <bf16|fp8|fp8_scaled>/swap<N>[+offload]")
    return MemoryConfig(m.group(1), int(m.group(2)), bool(m.group(3)))


@dataclass(frozen=True)
class MemoryItem:
    """Training configurations measured at one fixed size (`gpu_memory`)."""

    size: Size
    configs: tuple[MemoryConfig, ...]


@dataclass(frozen=True)
class InferSwap:
    size: Size
    blocks_to_swap: int


@dataclass(frozen=True)
class InferPlan:
    size: Size
    guidance: float
    lora_weight: float
    cache_threshold: float


@dataclass(frozen=True)
class Entry:
    """One model of the suite at the chosen preset (tiny overrides already applied)."""

    name: str
    title: str
    family: str
    configs: Path
    text_tokens: int
    lora_rank: int
    lora_alpha: float
    lora_targets: str
    train: tuple[TrainItem, ...]
    fp8: bool
    infer: InferPlan | None
    targets: dict[str, dict[str, tuple[str, float]]]
    transformer_overrides: dict[str, Any] = field(default_factory=dict)
    memory: tuple[MemoryItem, ...] = ()
    infer_swap: InferSwap | None = None


def size_label(size: Size) -> str:
    return "x".join(str(v) for v in size)


def _size(value: Any, where: str) -> Size:
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) and v > 0 for v in value)):
        raise UfoError(f"{TABLE}: {where}: expected [frames, height, width] as positive integers, got {value!r}")
    return (value[0], value[1], value[2])


def _train(items: list[dict], where: str) -> tuple[TrainItem, ...]:
    return tuple(TrainItem(tuple(_size(s, f"{where}.sizes") for s in item["sizes"])) for item in items)


def parse_entry(raw: dict[str, Any], preset: GpuPreset, assets: Path = ASSETS) -> Entry:
    """One table entry -> `Entry` for `preset` (the tiny block replaces sizes, widths and LoRA)."""
    try:
        name = raw["name"]
        lora = dict(raw["lora"])
        train, text_tokens, overrides = raw["train"], raw["text_tokens"], {}
        infer_raw = raw.get("infer")
        infer_size = infer_raw["size"] if infer_raw else None
        memory_raw, swap_raw = raw.get("memory", []), raw.get("infer_swap")
        memory_sizes = [m["size"] for m in memory_raw]
        swap_size = swap_raw["size"] if swap_raw else None
        if preset.name == "tiny":
            tiny = raw["tiny"]
            overrides = dict(tiny["transformer"])
            train, text_tokens = tiny["train"], tiny["text_tokens"]
            lora.update(tiny.get("lora", {}))
            infer_size = tiny.get("infer_size", infer_size)
            memory_sizes = tiny.get("memory_sizes", memory_sizes)
            swap_size = tiny.get("infer_swap_size", swap_size)
        if len(memory_sizes) != len(memory_raw):
            raise ValueError(f"tiny.memory_sizes has {len(memory_sizes)} sizes for {len(memory_raw)} memory items")
        memory = tuple(MemoryItem(_size(size, f"{name}.memory.size"),
                                  tuple(parse_config(c, f"{TABLE.name}: {name}.memory.configs") for c in m["configs"]))
                       for m, size in zip(memory_raw, memory_sizes))
        infer_swap = (InferSwap(_size(swap_size, f"{name}.infer_swap.size"), int(swap_raw["blocks_to_swap"]))
                      if swap_raw else None)
        infer = None
        if infer_raw:
            infer = InferPlan(_size(infer_size, f"{name}.infer.size"), float(infer_raw["guidance"]),
                              float(infer_raw["lora_weight"]), float(infer_raw["cache_threshold"]))
        # targets are written against the real sizes; a preset's items stand in for them by position
        relabel = {size_label(r.sizes[0]): size_label(p.sizes[0])
                   for r, p in zip(_train(raw["train"], f"{name}.train"), _train(train, f"{name}.train"))}
        if infer:
            relabel[size_label(_size(infer_raw["size"], f"{name}.infer.size"))] = size_label(infer.size)
        for m, item in zip(memory_raw, memory):
            for c in item.configs:
                relabel[f"{size_label(_size(m['size'], name))}/{c.label}"] = f"{size_label(item.size)}/{c.label}"
        if infer_swap:
            real = size_label(_size(swap_raw["size"], name))
            relabel[f"{real}/swap{infer_swap.blocks_to_swap}"] = f"{size_label(infer_swap.size)}/swap{infer_swap.blocks_to_swap}"
        targets = {}
        for case, metrics in raw.get("targets", {}).items():
            kind, _, label = case.partition("/")
            targets[f"{kind}/{relabel.get(label, label)}"] = {m: (op, float(v)) for m, (op, v) in metrics.items()}
        return Entry(
            name=name, title=raw.get("title", name), family=raw["family"], configs=assets / raw["configs"],
            text_tokens=int(text_tokens), lora_rank=int(lora["rank"]),
            lora_alpha=float(lora["alpha"]), lora_targets=lora["targets"], train=_train(train, f"{name}.train"),
            fp8=bool(raw.get("fp8", False)), infer=infer, targets=targets, transformer_overrides=overrides,
            memory=memory, infer_swap=infer_swap,
        )  # fmt: skip
    except UfoError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise UfoError(f"{TABLE}: entry {raw.get('name', '?')!r} is malformed ({type(exc).__name__}: {exc})") from None


def load_entries(preset: GpuPreset, models: list[str] | None = None, table: Path = TABLE) -> list[Entry]:
    """The table's entries for `preset`, optionally only those whose name or family is in `models`."""
    try:
        raw = json.loads(table.read_text())["entries"]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise UfoError(f"{table}: cannot read the GPU bench table ({exc})") from None
    entries = [parse_entry(r, preset, table.parent) for r in raw]
    if models:
        known = {e.name for e in entries} | {e.family for e in entries}
        unknown = [m for m in models if m not in known]
        if unknown:
            raise UfoError(f"--models: unknown {', '.join(unknown)}; choose from: {', '.join(sorted(known))}")
        entries = [e for e in entries if e.name in models or e.family in models]
    return entries


def unavailable_reason(entry: Entry, adapters: dict[str, type]) -> str | None:
    """Why an entry cannot run here (None when it can)."""
    if entry.family not in adapters:
        return f"family not available ('{entry.family}' is not in models.registry.ADAPTERS)"
    if not (entry.configs / "transformer" / "config.json").is_file():
        return f"configs not shipped ({entry.configs} has no transformer/config.json)"
    return None


class Budget:
    """The suite's deadline and each case's cap, on an injectable clock (tests use a fake one)."""

    def __init__(self, total_s: float, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.start = clock()
        self.total_s = total_s

    def elapsed(self) -> float:
        return self.clock() - self.start

    def remaining(self) -> float:
        return self.total_s - self.elapsed()

    def exhausted(self) -> bool:
        return self.remaining() <= 0

    def case_deadline(self, cap_s: float) -> float:
        """Clock value at which a case starting now must stop: its cap or the suite's end."""
        now = self.clock()
        return now + max(0.0, min(cap_s, self.remaining()))

    def skip_reason(self) -> str:
        return (f"time budget exhausted ({self.elapsed():.0f} s of the suite's {self.total_s:.0f} s "
                "used; rerun with --models to measure this case alone)")
