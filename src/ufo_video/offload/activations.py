"""Activation offload: the inputs gradient checkpointing keeps for each block live in host memory.

With non-reentrant checkpointing (what diffusers uses) a checkpointed block keeps only its inputs
until backward recomputes it, and it keeps them through autograd's saved tensors
(`torch.utils.checkpoint`'s `_NoopSaveInputs.save_for_backward`). torch ships the hooks that move
saved tensors to host memory and back: `torch.autograd.graph.save_on_cpu(pin_memory=True)`. Applied
around the `checkpoint` call only (inside it, the checkpoint's own hooks take over and save
nothing), it moves exactly those inputs: a copy into pinned memory when they are saved, and back
when the recomputation unpacks them. torch's own hooks issue the device->host copy on the compute
stream, where it waits for the block before and delays the block after; on CUDA `_SideStreamSave`
issues it on a side stream instead (after the tensor is ready; `record_stream` keeps the tensor's
memory until the copy finished), so it runs while the next block computes. The host->device copy
back waits for that copy (an event) and is non-blocking. Without CUDA the hooks are torch's own
(synchronous on the CPU), which is what the CPU tests run.

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


class _SideStreamSave(torch.autograd.graph.saved_tensors_hooks):
    """Saved tensors to pinned host memory through a side CUDA stream (see module doc), counted."""

    def __init__(self, stream: "torch.cuda.Stream", stats: OffloadStats):
        def pack(tensor: torch.Tensor):
            stats.tensors += 1
            stats.bytes += tensor.numel() * tensor.element_size()
            if tensor.device.type != "cuda":
                return tensor.device, tensor, None
            stream.wait_stream(torch.cuda.current_stream(tensor.device))  # the tensor is computed
            host = torch.empty(tensor.size(), dtype=tensor.dtype, layout=tensor.layout, pin_memory=True)
            with torch.cuda.stream(stream):
                host.copy_(tensor, non_blocking=True)
                tensor.record_stream(stream)  # its memory is not reused before the copy ran
                done = torch.cuda.Event()
                done.record(stream)
            return tensor.device, host, done

        def unpack(packed):
            device, host, done = packed
            if done is None:
                return host
            torch.cuda.current_stream(device).wait_event(done)
            return host.to(device, non_blocking=True)

        super().__init__(pack, unpack)


_STREAMS: dict[int, "torch.cuda.Stream"] = {}


def _save_hooks(stats: OffloadStats):
    """torch's `save_on_cpu` (counted) without CUDA; the side-stream save with it."""
    if not torch.cuda.is_available():
        return _CountedSaveOnCpu(False, stats)
    index = torch.cuda.current_device()
    if index not in _STREAMS:
        _STREAMS[index] = torch.cuda.Stream(index)
    return _SideStreamSave(_STREAMS[index], stats)


def host_input_checkpointing(stats: OffloadStats | None = None):
    """A `gradient_checkpointing_func` (diffusers' `enable_gradient_checkpointing(func)`) that
    checkpoints each block as diffusers' default does and keeps its saved inputs in (pinned, when
    CUDA is present) host memory."""
    stats = stats if stats is not None else OffloadStats()

    def checkpoint_on_host(module, *args):
        with _save_hooks(stats):
            return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)

    checkpoint_on_host.stats = stats  # type: ignore[attr-defined]
    return checkpoint_on_host
