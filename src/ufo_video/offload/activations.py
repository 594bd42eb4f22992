"""Activation offload: the inputs gradient checkpointing keeps for each block live in host memory.

With non-reentrant checkpointing (what diffusers uses) a checkpointed block keeps only its inputs
until backward recomputes it, and it keeps them through autograd's saved tensors
(`torch.utils.checkpoint`'s `_NoopSaveInputs.save_for_backward`). torch ships the hooks that move
saved tensors to host memory and back: `torch.autograd.graph.save_on_cpu(pin_memory=True)`. Applied
around the `checkpoint` call only (inside it, the checkpoint's own hooks take over and save
nothing), it moves exactly those inputs: an asynchronous copy into pinned memory when they are
saved, and back (non-blocking) when the recomputation unpacks them. Both copies run on the compute
stream, ordered with the kernels around them; the CPU does not wait for them.

This is diffusers' `gradient_checkpointing_func` contract: `(module, *args) -> module(*args)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class OffloadStats:
    """What the offload saved so far (tensors and bytes), for tests and the run's summary."""

    tensors: int = 0
    bytes: int = 0


class _CountedSaveOnCpu(torch.autograd.graph.save_on_cpu):
    """torch's `save_on_cpu`, counting what it packs."""

    def __init__(self, pin_memory: bool, stats: OffloadStats):
        super().__init__(pin_memory=pin_memory)
        pack = self.pack_hook

        def counted(tensor: torch.Tensor):
            stats.tensors += 1
            stats.bytes += tensor.numel() * tensor.element_size()
            return pack(tensor)

        self.pack_hook = counted


def host_input_checkpointing(stats: OffloadStats | None = None):
    """A `gradient_checkpointing_func` (diffusers' `enable_gradient_checkpointing(func)`) that
    checkpoints each block as diffusers' default does and keeps its saved inputs in (pinned, when
    CUDA is present) host memory."""
    stats = stats if stats is not None else OffloadStats()
    pin = torch.cuda.is_available()

    def checkpoint_on_host(module, *args):
        with _CountedSaveOnCpu(pin, stats):
            return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)

    checkpoint_on_host.stats = stats  # type: ignore[attr-defined]
    return checkpoint_on_host
