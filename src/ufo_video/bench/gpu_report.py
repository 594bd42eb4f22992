"""Results of the GPU suite: one record per case, targets judged, gpu.json / gpu.md / table.

Each case has a status: `ok`, `skipped` (with the reason: family not available, configs not
shipped, time budget exhausted, build failed), `oom` (recorded, the suite goes on) or `error`
(a bug: message and traceback in the record, the command exits non-zero). Targets come from the
model table, per case id suffix; they are judged only at the real preset (tiny sizes say
nothing about an H200) and only on numbers (a "n/a on cpu" is never a pass).
"""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_OPS = {"<=": operator.le, ">=": operator.ge}
NOT_JUDGED = "not judged: tiny preset"


@dataclass
class GpuCase:
    id: str  # "<entry>/<kind>[/<size>]"
    entry: str
    kind: str  # build-bf16 | build-fp8 | train-bf16 | train-fp8 | infer | memory | infer-swap
    status: str = "ok"  # ok | skipped | oom | error
    reason: str | None = None
    seconds: float = 0.0  # wall time the case took
    metrics: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def suffix(self) -> str:
        return self.id.split("/", 1)[1]


def judge(case: GpuCase, targets: dict[str, dict[str, tuple[str, float]]], judged: bool) -> None:
    """Attach the targets of `case` (by id suffix) with the measured value and whether it is met."""
    for metric, (op, value) in targets.get(case.suffix, {}).items():
        measured = case.metrics.get(metric)
        numeric = isinstance(measured, (int, float)) and not isinstance(measured, bool)
        if not judged:
            met, why = None, NOT_JUDGED
        elif case.status != "ok" or not numeric:
            met, why = None, f"not measured ({case.status if case.status != 'ok' else measured})"
        else:
            met, why = bool(_OPS[op](measured, value)), None
        case.targets.append({"metric": metric, "op": op, "value": value,
                             "measured": measured, "met": met, "why": why})


def _num(v: Any, digits: int = 3) -> str:
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v)
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _gb(v: Any) -> str:
    return f"{v:.1f} GB" if isinstance(v, float) else str(v)


def _summary(c: GpuCase) -> dict[str, str]:
    m = c.metrics
    if c.status != "ok":
        return {"result": f"{c.status}: {c.reason}"}
    if c.kind.startswith("build"):
        return {"result": f"{m['params']:,} params in {_num(m['build_s'])} s; LoRA {m['lora_params']:,} "
                          f"(rank {m['lora_rank']}); base weights {m['base_weights_gb']:.3g} GB + LoRA training "
                          f"state {m['lora_state_gb']:.3g} GB; on device: {_gb(m['device_gb'])}"}
    if c.kind == "memory":
        est = m["estimate_gb"]
        err = f", {m['estimate_error']:+.0%}" if isinstance(m.get("estimate_error"), float) else ""
        over = f", swap overhead x{_num(m['swap_overhead'])}" if "swap_overhead" in m else ""
        return {"result": f"{m['size']} {m['config']}: {_num(m['s_per_step'])} s/step "
                          f"(x{_num(m.get('ratio_to_fastest'))} the fastest{over}), peak {_gb(m['peak_gb'])}, "
                          f"planner estimate {est:.1f} GB{err}; {m['host_gb']:.1f} GB of blocks on the host"}
    if c.kind == "infer-swap":
        return {"result": f"{m['size']}, {m['blocks_to_swap']} of {m['blocks']} blocks swapped: "
                          f"{_num(m['s_per_step'])} s per CFG step, peak {_gb(m['peak_gb'])}"}
    if c.kind.startswith("train"):
        extra = f" (did not fit: {', '.join(m['did_not_fit'])})" if m.get("did_not_fit") else ""
        return {"result": f"{m['size']}{extra}: {_num(m['s_per_step'])} s/step, peak {_gb(m['peak_gb'])}, "
                          f"MFU {_num(m['mfu'])} (nominal {_num(m['nominal_mfu'])})"}
    parts = [f"base {_num(m.get('base_step_s'))} s/step", f"unfused/base {_num(m.get('unfused_ratio'))}",
             f"fused/base {_num(m.get('fused_ratio'))}", f"weight change/load {_num(m.get('weight_change_ratio'))}",
             f"loop {_num(m.get('uncached_s_per_step'))} s/step, cached {_num(m.get('cached_s_per_step'))} "
             f"(skipped {m.get('cache_skipped', '-')} of {m.get('cache_calls', '-')}), "
             f"all skipped {_num(m.get('cache_all_skipped_s_per_step'))}"]
    if m.get("skipped_parts"):
        parts.append(f"not measured: {', '.join(m['skipped_parts'])}")
    return {"result": "; ".join(parts)}


def table_rows(cases: list[GpuCase]) -> list[tuple[str, str, str]]:
    return [(c.id, c.status, _summary(c)["result"]) for c in cases]


def format_table(cases: list[GpuCase]) -> str:
    rows = [("case", "status", "result")] + table_rows(cases)
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2]}" for r in rows]
    lines.insert(1, "-" * (widths[0] + widths[1] + 10))
    judged = [(c.id, t) for c in cases for t in c.targets]
    if judged:
        lines += ["", "targets:"]
        for cid, t in judged:
            verdict = {True: "met", False: "MISSED", None: t["why"]}[t["met"]]
            lines.append(f"  {cid} {t['metric']} {t['op']} {t['value']:g}: measured {_num(t['measured'])} -> {verdict}")
    return "\n".join(lines)


def payload(cases: list[GpuCase], header: dict[str, Any]) -> dict[str, Any]:
    return {**header, "cases": [asdict(c) for c in cases]}


def markdown(cases: list[GpuCase], header: dict[str, Any]) -> str:
    d, v = header["device"], header["versions"]
    out = [
        f"# ufo-video bench --suite gpu ({header['preset']} preset)", "",
        f"- command: `{header['command']}`",
        f"- date (UTC): {header['started_utc']}; suite {header['seconds']:.0f} s "
        f"of a {header['budget_s']:.0f} s budget",
        f"- device: {d['name']} ({d.get('memory_gb', 'n/a')} GB), host {header['host_cpu']}",
        f"- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- measured peak (dense {header['calibration_n']}^3 bf16 matmul): {header['peak_tflops']:.1f} TFLOP/s",
        f"- {header['flop_formula']}", f"- {header['nominal_formula']}",
        "- random weights (meta -> empty on the device -> N(0, 0.02) init), random latents and text embeddings",
        "", "| case | status | result |", "|---|---|---|",
    ]
    out += [f"| {cid} | {st} | {res} |" for cid, st, res in table_rows(cases)]
    judged = [(c.id, t) for c in cases for t in c.targets]
    if judged:
        out += ["", "## Targets (issue 16)", "", "| case | metric | target | measured | met |", "|---|---|---|---|---|"]
        for cid, t in judged:
            verdict = {True: "yes", False: "**no**", None: t["why"]}[t["met"]]
            out.append(f"| {cid} | {t['metric']} | {t['op']} {t['value']:g} | {_num(t['measured'])} | {verdict} |")
    notes = [f"- {c.id}: {n}" for c in cases for n in c.metrics.get("notes", [])]
    if notes:
        out += ["", "## Notes", "", *notes]
    return "\n".join(out) + "\n"


def write(out_dir: Path, cases: list[GpuCase], header: dict[str, Any]) -> tuple[Path, Path]:
    from ufo_video.atomic import write_json_atomic, write_text_atomic

    j = write_json_atomic(out_dir / "gpu.json", payload(cases, header), indent=2)
    m = write_text_atomic(out_dir / "gpu.md", markdown(cases, header))
    return j, m
