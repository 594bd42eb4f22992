"""The tiny variants each registered family runs the contract suite on: a family joins with its line.

Every family in `ufo_video.models.registry.ADAPTERS` must appear here (a test checks it). A line
lists the `model make-tiny` variants to test, in the layout diffusers reads (the pipeline
equality needs it); nothing else about the family is written here: the tests ask its adapter.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """One tiny model folder of the suite: `make_tiny_model(family, layout=..., variant=...)`."""

    family: str
    variant: str
    layout: str = "diffusers"

    @property
    def id(self) -> str:
        return f"{self.family}-{self.variant}" + ("" if self.layout == "diffusers" else f"-{self.layout}")


def variants(family: str, *names: str, layout: str = "diffusers") -> tuple[Variant, ...]:
    return tuple(Variant(family, name, layout) for name in names)


# ---- one line per family ---------------------------------------------------------------------------
FAMILIES: dict[str, tuple[Variant, ...]] = {
    "easyanimate": variants("easyanimate", "inp", "t2v"),
    "wan": variants("wan", "t2v", "i2v", "a14b", "ti2v", "a14b-i2v"),
    "ltx2": variants("ltx2", "t2v", "i2v", "t2v-2.3", "i2v-2.3"),
}

VARIANTS: tuple[Variant, ...] = tuple(v for vs in FAMILIES.values() for v in vs)
