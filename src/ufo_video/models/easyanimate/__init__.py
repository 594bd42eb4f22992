"""EasyAnimate V5.1 (InP and T2V), the first model family: everything it knows lives in this package.

`adapter` (the `ModelAdapter`), `transformer` (the transformer class it builds), `layout` (both
on-disk layouts, original <-> diffusers names, the VAE's compression), `masks` (the InP training
masks), `cache` (its latent-cache items), `tiny` (tiny random folders for tests and the demo).
The registry imports `EasyAnimateAdapter` from here.
"""

from ufo_video.models.easyanimate.adapter import EasyAnimateAdapter

__all__ = ["EasyAnimateAdapter"]
