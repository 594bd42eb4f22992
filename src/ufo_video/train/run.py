"""The live objects of one training run and the small helpers every recipe step shares.

Below `setup` (which builds a `TrainRun`) and `step` (which runs one loss): both import these
names from here, so neither imports the other at module level.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ufo_video.config import UfoConfig
from ufo_video.errors import UfoError

ADAPTER_NAME = "ufo"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class TrainError(UfoError):
    """A training run that cannot go on (NaN loss, out of memory, unusable resume state)."""


@dataclass
class TrainRun:
    """The live objects of one run, passed between the recipe's steps."""

    cfg: UfoConfig
    accelerator: Any
    model: Any  # ModelAdapter
    transformer: torch.nn.Module  # the unwrapped transformer (with the LoRA)
    trained: torch.nn.Module  # what the loss step calls: the transformer as accelerate prepared it
    optimizer: Any
    lr_scheduler: Any
    params: list[torch.nn.Parameter]
    summary: Any  # LoraSummary
    output_dir: Path
    weight_dtype: torch.dtype
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The trainable tensors by name, whole. Under FSDP they are gathered from the shards, which
        is a collective: every process must call this at the same point."""
        from ufo_video.train.fsdp import gathered_trainable

        return gathered_trainable(self.transformer)

    @contextlib.contextmanager
    def training_forward(self):
        """Route `model.predict` through the prepared (DDP / autocast) transformer for one step."""
        self.model.transformer = self.trained
        try:
            yield
        finally:
            self.model.transformer = self.transformer


@contextlib.contextmanager
def on_device(module: torch.nn.Module, device: torch.device, low_vram: bool):
    """low_vram: keep `module` on the CPU and move it to the accelerator only while it is used."""
    if not low_vram or device.type == "cpu":
        yield module
        return
    module.to(device)
    try:
        yield module
    finally:
        module.to("cpu")
        torch.cuda.empty_cache()
