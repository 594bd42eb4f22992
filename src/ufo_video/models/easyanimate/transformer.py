"""The EasyAnimate transformer class this project builds and loads (diffusers' plus two mixins).

Its own module so that the adapter and the tiny builders (`tiny.py`, the tiny base's trainer) share
it without importing each other.
"""

from __future__ import annotations

from typing import Any

from diffusers import EasyAnimateTransformer3DModel
from diffusers.loaders.peft import PeftAdapterMixin
from diffusers.models.cache_utils import CacheMixin


class UfoEasyAnimateTransformer(EasyAnimateTransformer3DModel, PeftAdapterMixin, CacheMixin):
    """diffusers' EasyAnimate transformer with the PEFT adapter and cache APIs it lacks in 0.42.1.

    diffusers 0.42.1 ships no LoRA loader for EasyAnimate; giving the class `PeftAdapterMixin`
    brings `add_adapter`, `set_adapters(names, weights)`, `fuse_lora` and `unload_lora`, all
    implemented by diffusers/PEFT; `CacheMixin` brings `enable_cache` / `cache_context`, the public
    step-cache API diffusers' own video transformers have. Remove once diffusers adds the mixins.
    """

    # keep the diffusers class name in saved configs so plain diffusers can load what we save
    config_name = EasyAnimateTransformer3DModel.config_name

    def save_config(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - passthrough
        return super().save_config(*args, **kwargs)


UfoEasyAnimateTransformer.__name__ = "EasyAnimateTransformer3DModel"
