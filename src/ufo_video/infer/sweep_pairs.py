"""Which UFO files a sweep row applies together, and the LoRA stack held fixed under every row.

A model with one denoiser takes one UFO file per row. A model with several experts (two
denoisers split by timestep) takes one UFO LoRA per expert, trained in separate runs: a row is
then a *set* (a pair on a two-expert model), never one expert's file against the other's. Files
are matched to experts by their `ufo_expert` metadata (written by `ufo-video train`), and the
files of different experts are paired by their `checkpoint-N` step:

- every expert given has the same steps -> one row per step ("checkpoint-N");
- every expert given has exactly one file -> one row (named after the files);
- files of only one expert -> one row per file (that expert alone; generation warns that the
  other expert runs without a UFO);
- anything else (other steps per expert, two files of one expert at one step, a file without
  `ufo_expert`) is refused with what was found, never guessed.

Per-expert weights: a row's weight w applies to each of its files times the expert's scale
(`--expert-scale NAME=FACTOR`, 1 when not given), so weights 0.1 with scale 2 on the second
expert runs (0.1, 0.2); the weight axis, the trend and the rule stay one number per row.

The stack (`--base-lora PATH[:W]`, e.g. a step-distillation LoRA) is attached after the UFO
files and held at its weights in every video, the base row (UFO weight 0) included, so every
difference the sweep reports is "UFO on top of this stack" against "this stack alone".
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ufo_video.errors import UfoError
from ufo_video.lora.formats import file_expert
from ufo_video.infer.settings import LoraSpec

_STEP = re.compile(r"checkpoint-(\d+)\.safetensors$")


@dataclass(frozen=True)
class Row:
    """One sweep row: its name and the indices of its UFO files (in the sweep's file order)."""

    label: str
    files: tuple[int, ...]


def model_experts(model: str) -> list[str]:
    """The model folder's expert names in its own order (`ModelAdapter.experts`; one name for a
    single-denoiser model), read from its configs without loading weights."""
    from ufo_video.models.registry import model_shell

    if not model or not Path(model).is_dir():
        return ["transformer"]  # loading the model fails later with its own message
    return [e.component for e in model_shell(model).experts()]


def plan_rows(paths: Sequence[Path], experts: Sequence[str], labels: Sequence[str]) -> tuple[list[Path], list[Row], list[str | None]]:
    """(files in row order, rows, each file's expert). `experts`: the model's expert names in
    its own order (`ModelAdapter.experts`); `labels`: names for single-file rows."""
    if len(experts) < 2:
        return list(paths), [Row(label, (i,)) for i, label in enumerate(labels)], [None] * len(paths)
    by_expert: dict[str, list[Path]] = {}
    for p in paths:
        e = file_expert(p)
        if e is None:
            raise UfoError(f"{p}: the file names no expert (metadata ufo_expert), so the sweep cannot pair it on this "
                           f"{len(experts)}-expert model ({', '.join(experts)}); give LoRAs trained per expert by "
                           "`ufo-video train` (train.expert=NAME), or try the file alone with `ufo-video generate --lora`")  # fmt: skip
        if e not in experts:
            raise UfoError(f"{p}: the file is for the expert {e!r} (metadata ufo_expert), but the model has {', '.join(experts)}")
        by_expert.setdefault(e, []).append(p)
    given = [e for e in experts if e in by_expert]
    if len(given) == 1:
        return list(paths), [Row(label, (i,)) for i, label in enumerate(labels)], [given[0]] * len(paths)
    steps = {e: [_step(p) for p in by_expert[e]] for e in given}
    same = all(None not in s and len(set(s)) == len(s) for s in steps.values()) and len({frozenset(s) for s in steps.values()}) == 1
    if same:
        order = sorted(steps[given[0]])
        files = [next(p for p in by_expert[e] if _step(p) == n) for n in order for e in given]
        rows = [Row(f"checkpoint-{n}", tuple(range(k * len(given), (k + 1) * len(given)))) for k, n in enumerate(order)]
        return files, rows, [e for _ in order for e in given]
    if all(len(by_expert[e]) == 1 for e in given):
        files = [by_expert[e][0] for e in given]
        return files, [Row("+".join(p.stem for p in files), tuple(range(len(files))))], list(given)
    found = "; ".join(f"{e}: {', '.join(p.name for p in by_expert[e])}" for e in given)
    raise UfoError(f"cannot pair the LoRA files by expert ({found}); the sweep pairs one file per expert by its "
                   "checkpoint-N step, so give the same steps for every expert (e.g. both runs' output_dir), or one "
                   "file per expert")  # fmt: skip


def _step(path: Path) -> int | None:
    m = _STEP.match(path.name)
    return int(m[1]) if m else None


def parse_expert_scales(items: Sequence[str], experts: Sequence[str]) -> dict[str, float]:
    """`NAME=FACTOR` items (`--expert-scale`), checked against the model's experts."""
    scales: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            factor = float(value)
        except ValueError:
            factor = math.nan
        if not sep or not math.isfinite(factor) or factor < 0:
            raise UfoError(f"--expert-scale {item!r}: write EXPERT=FACTOR with a finite factor >= 0, e.g. {experts[-1]}=2")
        if len(experts) < 2 or name not in experts:
            raise UfoError(f"--expert-scale {item!r}: the model's experts are {', '.join(experts)}"
                           + ("" if len(experts) > 1 else " (one: there is nothing to scale apart)"))  # fmt: skip
        if name in scales:
            raise UfoError(f"--expert-scale names {name} twice")
        scales[name] = factor
    return scales


def check_stack(stack: Sequence[LoraSpec], ufo: Sequence[Path]) -> list[LoraSpec]:
    """The stack's files exist, are not among the swept UFO files, and are given once."""
    seen = {Path(p).resolve() for p in ufo}
    for spec in stack:
        p = Path(spec.path)
        if not p.is_file():
            raise UfoError(f"--base-lora {spec.path}: file not found")
        if p.resolve() in seen:
            raise UfoError(f"--base-lora {spec.path} is also a swept --lora (or given twice); a file is either held fixed or swept")
        seen.add(p.resolve())
    return list(stack)
