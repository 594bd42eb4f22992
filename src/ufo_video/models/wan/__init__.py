"""Wan 2.1 / 2.2, the second model family: everything it knows lives in this package.

`adapter` (the `ModelAdapter`), `folders` (detection, inspection, strict loading of both
transformer layouts), `layout` (Wan's original <-> diffusers names), `tiny` (tiny random folders
written by diffusers' own pipelines). The registry imports `WanAdapter` from here.
"""

from ufo_video.models.wan.adapter import WanAdapter

__all__ = ["WanAdapter"]
