"""The one model the web app keeps loaded, shared by every tab.

`ModelSession.generator(settings)` hands out a `VideoGenerator` for the settings:
- the same model, dtype, device, memory mode and step cache -> the loaded generator is reused;
  other sizes, frames, steps or guidance only change its `settings` (read per video);
- other LoRA files -> on a placement that cannot go stale (the CPU, or `model_full_load`) the
  LoRAs are swapped on the loaded model with `lora.apply` (`remove_loras` + `load_loras`);
  with offloading (hooks installed on the modules of the moment) the model is loaded again;
- other weights -> `set_lora_weights` by the caller, never a reload.

Per-step progress: the generator's `on_step` callback is set around one video. The engine's
public hooks do the rest (`update_settings`, `replace_loras`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from ufo_video.config import FP8_MODES
from ufo_video.infer.settings import GenerationSettings

StepCallback = Callable[[int, int], None]  # (steps done, steps in all)


def load_key(s: GenerationSettings) -> tuple:
    """What needs a fresh load when it changes."""
    return (str(Path(s.model).resolve()), s.weight_dtype, s.device, s.memory_mode, s.cache, s.cache_threshold,
            s.blocks_to_swap)


class ModelSession:
    """Holds at most one loaded `VideoGenerator`. `lock` serialises use (the queue runs one job
    at a time anyway; the lock also covers direct calls)."""

    def __init__(self, log: Callable[[str], None] = print):
        self.log = log
        self.gen = None
        self.key: tuple | None = None
        self.lora_paths: tuple[str, ...] = ()
        self.loads = 0  # model loads so far (the page shows it: changing weights must not add one)
        self.lock = threading.RLock()

    def _can_swap_loras(self, s: GenerationSettings) -> bool:
        return self.gen is not None and (s.memory_mode == "model_full_load" or
                                         (self.gen.device.type == "cpu" and s.memory_mode not in FP8_MODES))  # fmt: skip

    def generator(self, settings: GenerationSettings):
        """A loaded generator with exactly `settings.loras` attached (unfused) at their weights."""
        from ufo_video.infer.engine import VideoGenerator

        settings = replace(settings, fuse=False)
        paths = tuple(str(Path(s.path).resolve()) for s in settings.loras)
        key = load_key(settings)
        if self.gen is None or key != self.key or (paths != self.lora_paths and not self._can_swap_loras(settings)):
            self.gen = None  # free the old model before loading the next
            self.log(f"loading {settings.model} ...")
            gen = VideoGenerator(settings, log=self.log)
            self.gen, self.key, self.lora_paths = gen, key, paths
            self.loads += 1
        elif paths != self.lora_paths:
            self.lora_paths = ()
            self.gen.replace_loras(settings.loras)
            self.lora_paths = paths
            self.log(f"LoRAs attached: {', '.join(Path(p).name for p in paths) or 'none'} (model kept loaded)")
        self.gen.update_settings(settings)
        return self.gen

    @contextmanager
    def use(self, settings: GenerationSettings, on_step: StepCallback | None = None) -> Iterator[Any]:
        """The generator for `settings`, reporting steps to `on_step`, held exclusively."""
        with self.lock:
            gen = self.generator(settings)
            gen.on_step = on_step
            try:
                yield gen
            finally:
                gen.on_step = None
