"""The inference side of the model-adapter interface: the family's diffusers pipelines, their
per-call arguments, the scheduler's shift, and the blocks the memory and cache machinery act on.
`ModelAdapter` (models/base.py) inherits these hooks; they live here to keep each file one concern.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

Conditioning = dict[str, torch.Tensor]


class PipelineHooks(ABC):
    """Hooks `infer/`, validation and the GPU check call on a loaded adapter (see docs/adapters.md)."""

    display_name: ClassVar[str]  # ModelAdapter's

    @abstractmethod
    def pipeline(self, task: str = "t2v") -> Any:
        """A diffusers pipeline for `task` over the loaded components (shares them; no copies)."""

    def pipeline_inputs(self, task: str, start: Any, end: Any, frames: int, size: tuple[int, int]) -> dict[str, Any]:
        """Extra pipeline keyword arguments of a task (start/end images are PIL images)."""
        return {}

    def pipeline_defaults(self, task: str, *, steps: int, guidance_scale: float, fps: float) -> dict[str, Any]:
        """Pipeline keyword arguments every call of `task` adds besides the generic ones (prompt,
        size, frames, steps, guidance, generator) and `pipeline_inputs`': the defaults a family's
        pipeline does not pick for a given model itself (a schedule for a distilled checkpoint, a
        guidance block list valid for the model's depth, the frame rate). Default: none."""
        return {}

    def pipeline_call_conditioning(self, call: dict[str, Any]) -> Conditioning:
        """The named tensors of `training_conditioning` (and those of `encode_text` the family can
        tell) inside one call of the transformer by this family's pipeline; `call` holds that
        call's arguments by parameter name. The inverse of how `predict` passes them: the contract
        suite (tests/contract) captures the pipeline's call for a start image and compares, so
        training and the pipeline cannot drift apart. Default: none (models without conditioning)."""
        return {}

    #: names in `training_conditioning` that are noise drawn per sample for an input the pipeline
    #: fills with its own generator's noise (e.g. a silent audio stream): no draw of training can
    #: equal the pipeline's, so the contract suite compares these by shape only. Default: none.
    conditioning_noise_items: ClassVar[tuple[str, ...]] = ()

    def noiseless_pipeline_inputs(self, task: str) -> dict[str, Any]:
        """Pipeline keyword arguments that switch off the noise the pipeline adds to given frames
        (where `start_image_noise_applies`), so a captured call can equal `training_conditioning`
        without start-image noise exactly. Default: the pipeline adds none."""
        return {}

    def scheduler_with_shift(self, scheduler: Any, shift: float) -> Any:
        """A new sampling scheduler like `scheduler` but with the static flow shift `shift`
        (`infer.flow_shift`, `--flow-shift`: step-distillation LoRAs come with their own), built
        with diffusers' `from_config`, so the loaded one stays as it is. Default: the config key
        that carries the shift (`flow_shift` where the config samples on flow sigmas, else
        `shift`); a schedule shifted by the video size (`use_dynamic_shifting`), which ignores a
        static shift, or one without a static shift, is refused saying why. A family whose
        scheduler keeps its shift elsewhere overrides this."""
        from ufo_video.errors import UfoError

        cfg, name = scheduler.config, type(scheduler).__name__
        where = f"--flow-shift {shift:g} (infer.flow_shift): {self.display_name}'s scheduler {name}"
        if cfg.get("use_dynamic_shifting"):
            raise UfoError(f"{where} shifts its schedule by the video size (use_dynamic_shifting=true) and would "
                           "ignore a static shift; leave --flow-shift unset for this model")  # fmt: skip
        if "flow_shift" in cfg and cfg.get("use_flow_sigmas", True):
            key = "flow_shift"
        elif "shift" in cfg:
            key = "shift"
        else:
            raise UfoError(f"{where} has no static flow shift (no flow_shift with use_flow_sigmas=true, no shift "
                           "in its config); leave --flow-shift unset for this model")  # fmt: skip
        return type(scheduler).from_config(cfg, **{key: float(shift)})

    def pipeline_negative_prompt(self, negative_prompt: str | None) -> str | None:
        """What to pass as `negative_prompt` for "none given" (a family may need "" instead of None)."""
        return negative_prompt

    def swap_blocks(self, transformer: nn.Module) -> nn.ModuleList:
        """The ModuleList of `transformer`'s (one denoiser's) blocks, run in order, that block swap
        (`train.blocks_to_swap`, `generate --blocks-to-swap`) may keep in host memory. Default: this
        family does not support block swap."""
        from ufo_video.errors import UfoError

        raise UfoError(f"{self.display_name} does not support block swap (train.blocks_to_swap / --blocks-to-swap); "
                       "set it to 0")

    def step_cache_blocks(self) -> Any:
        """Register the transformer block class with diffusers' cache hooks when diffusers lacks it
        (First Block Cache finds blocks through its registry). Default: nothing to register. A family
        whose blocks the cache cannot skip raises `UfoError` saying so (`generate --cache` then stops
        with that line)."""
        return None
