"""What a bench case returns, how results are judged against targets, printed and saved."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ufo_video.bench.measure import ABTiming, Spread

MB = 1024 * 1024


@dataclass
class Target:
    """`ratio <op> value`; op "report" means no target (the number is information)."""

    op: str
    value: float | None = None

    def met(self, ratio: float) -> bool | None:
        if self.op == "<=":
            return ratio <= self.value
        if self.op == ">=":
            return ratio >= self.value
        return None

    def text(self) -> str:
        return "report" if self.op == "report" else f"{self.op} {self.value:g}"


@dataclass
class CaseResult:
    name: str
    description: str
    a_label: str  # the denominator of the ratio
    b_label: str  # the numerator
    ratio: Spread
    target: Target
    a_seconds: Spread | None = None
    b_seconds: Spread | None = None
    peak_bytes_a: int | None = None
    peak_bytes_b: int | None = None
    unit: str = "time B / time A"
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_timing(cls, name: str, description: str, a_label: str, b_label: str, timing: ABTiming,
                    target: Target, **kw: Any) -> "CaseResult":
        return cls(name, description, a_label, b_label, Spread.of(timing.ratios), target,
                   Spread.of(timing.a_seconds), Spread.of(timing.b_seconds), **kw)

    @property
    def met(self) -> bool | None:
        return self.target.met(self.ratio.median)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "unit": self.unit,
            "a": self.a_label, "b": self.b_label,
            "ratio": self.ratio.as_dict(), "target": self.target.text(), "met": self.met,
            "a_seconds": self.a_seconds.as_dict() if self.a_seconds else None,
            "b_seconds": self.b_seconds.as_dict() if self.b_seconds else None,
            "peak_bytes_a": self.peak_bytes_a, "peak_bytes_b": self.peak_bytes_b,
            "notes": self.notes, "details": self.details,
        }  # fmt: skip


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / MB:.1f}"


def format_table(results: list[CaseResult]) -> str:
    rows = [("case", "ratio (median)", "spread min..max [IQR]", "target", "met", "peak MB A / B")]
    for r in results:
        s = r.ratio
        met = {True: "yes", False: "NO", None: "-"}[r.met]
        rows.append((r.name, f"{s.median:.3f}", f"{s.min:.3f}..{s.max:.3f} [{s.q1:.3f}..{s.q3:.3f}]",
                     r.target.text(), met, f"{_mb(r.peak_bytes_a)} / {_mb(r.peak_bytes_b)}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    legend = [f"  {r.name}: ratio = {r.b_label} / {r.a_label} ({r.unit})" for r in results]
    notes = [f"  {r.name}: {n}" for r in results for n in r.notes]
    return "\n".join(lines + ["", "ratios:"] + legend + (["", "notes:"] + notes if notes else []))


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Atomic write through the project's one atomic-write module."""
    from ufo_video.atomic import write_json_atomic

    return write_json_atomic(path, payload, indent=2)
