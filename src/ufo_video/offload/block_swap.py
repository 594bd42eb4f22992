"""Block swap: the frozen weights of N transformer blocks live in host memory and are copied into a
ring of device buffers just before each of those blocks runs.

Design (musubi-tuner's host->device-only offloader, PR #972, and diffusion-pipe's): at install,
each swapped block's frozen base tensors (never the LoRA's: LoRA parameters, their gradients and the
optimizer state stay on the device) are packed into ONE flat host buffer, pinned when the device is
CUDA, and the block's parameters point into it. A `Ring` of preallocated flat device buffers (2 by
default, each as large as the largest swapped block) receives one host->device copy per block on a
side CUDA stream; before a block runs its parameters point at its slot, after it ran back at the
host buffer. Nothing is copied back: the weights are frozen. Without CUDA (tests, or host and
device both the CPU) the same code runs with synchronous copies.

Order. While block i runs, the block expected next is copied into another slot. The next block is
predicted from the last two calls: ascending (forward), descending (backward's recomputation under
gradient checkpointing), or the same block twice (a turn: forward's last block is the first one
backward recomputes; backward's last block is the next forward's first). A wrong guess costs a
synchronous copy, never a wrong result.

Safety. A slot is only overwritten when its occupant is not the block about to run, and then all
uses of the occupant were issued already (forward: earlier blocks; backward: autograd runs every
node of block i+1 before any node of block i, which were created earlier), and the copy stream
first waits for everything issued on the compute stream so far. Training therefore needs gradient
checkpointing on: without it autograd would keep a swapped block's weights (slot views) for the
backward pass while the slot is reused (`train.setup` refuses that combination).

Placement. The offloader owns where the swapped tensors live: a `.to(device)` on the model (a
pipeline's `to`, accelerate's `prepare` or its CPU-offload hooks) moves everything else and leaves
them in host memory (a guard on the owning modules' `_apply`); a dtype change of a released block
is refused, since the packed layout is fixed. Weights replaced from outside between calls (fusing a
LoRA into them, say) are copied into the host buffer before the block's next run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from ufo_video.errors import UfoError

ALIGN = 256  # byte alignment of each tensor inside a packed buffer (a kernel may choose by alignment)


def frozen_base_parameters(block: nn.Module) -> list[tuple[nn.Module, str, nn.Parameter]]:
    """(owner module, name, parameter) of every frozen, non-empty parameter of `block` that is not a
    PEFT adapter's (modules named `lora_*`): what block swap moves."""
    seen: set[int] = set()
    found = []
    for mname, module in block.named_modules():
        if any(part.startswith("lora_") for part in mname.split(".")):
            continue
        for name, p in module._parameters.items():
            if p is None or p.requires_grad or p.numel() == 0 or id(p) in seen:
                continue
            seen.add(id(p))
            found.append((module, name, p))
    return found


@dataclass
class _Packed:
    """One swapped block: its moved parameters, their byte offsets in the flat host buffer."""

    params: list[nn.Parameter]
    offsets: list[int]
    host: torch.Tensor  # flat uint8
    host_views: list[torch.Tensor]
    slot_views: dict[int, list[torch.Tensor]] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return self.host.numel()


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _view(flat: torch.Tensor, offset: int, like: torch.Tensor) -> torch.Tensor:
    return flat[offset: offset + _nbytes(like)].view(like.dtype).view(like.shape)


class Ring:
    """`slots` flat device buffers that swapped blocks are copied into; may be shared by several
    `BlockSwap`s (the two experts of a two-expert model), which then take turns."""

    def __init__(self, device: torch.device | str, slots: int = 2):
        if slots < 1:
            raise ValueError("a ring needs at least one slot")
        self.device = torch.device(device)
        self.slots = slots
        self.nbytes = 0
        self.buffers: list[torch.Tensor] = []
        self.owner: list[tuple[int, int] | None] = [None] * slots  # (id of the BlockSwap, block index)
        self.ready: list[Any] = [None] * slots  # CUDA event: the slot's copy is complete
        self.used = [0] * slots  # when each slot was last read (least recently used is overwritten)
        self._clock = 0
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def reserve(self, nbytes: int) -> None:
        """Make every slot at least `nbytes` large (at install, before any block is loaded)."""
        if nbytes > self.nbytes:
            self.buffers = [torch.empty(nbytes, dtype=torch.uint8, device=self.device) for _ in range(self.slots)]
            self.nbytes = nbytes
            self.owner = [None] * self.slots
            self.ready = [None] * self.slots

    def slot_of(self, key: tuple[int, int]) -> int | None:
        return self.owner.index(key) if key in self.owner else None

    def load(self, key: tuple[int, int], host: torch.Tensor, avoid: set[int]) -> int | None:
        """Copy `host` into the least recently used slot not in `avoid` (None: no such slot)."""
        free = [s for s in range(self.slots) if s not in avoid]
        if not free:
            return None
        s = min(free, key=lambda k: self.used[k])
        dst = self.buffers[s][: host.numel()]
        if self.stream is None:
            dst.copy_(host)
            self.ready[s] = None
        else:
            # every use of the slot's previous occupant was issued on the compute stream already
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                dst.copy_(host, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self.stream)
            self.ready[s] = event
        self.owner[s] = key
        return s

    def use(self, s: int) -> None:
        """The compute stream is about to read slot `s`: it waits for the slot's copy."""
        self._clock += 1
        self.used[s] = self._clock
        if self.ready[s] is not None:
            torch.cuda.current_stream(self.device).wait_event(self.ready[s])

    def forget(self, key: tuple[int, int]) -> None:
        s = self.slot_of(key)
        if s is not None:
            self.owner[s] = None

    def idle(self) -> None:
        """Wait until no copy is in flight (before a host buffer is written)."""
        if self.stream is not None:
            self.stream.synchronize()


class BlockSwap:
    """Swap the last `count` blocks of `blocks` (a ModuleList) between `host` and `device`.

    `trace`: a list that receives ("copy", block, slot) for every copy and ("run", block, slot,
    occupants) before every block runs (occupants: the block in each slot, None for a slot empty or
    another swap's) — the copy schedule, for tests and diagnostics."""

    def __init__(self, blocks: nn.ModuleList, count: int, device: torch.device | str, host: torch.device | str = "cpu",
                 ring: Ring | None = None, slots: int = 2, trace: list | None = None):
        if not 0 < count <= len(blocks):
            raise ValueError(f"count must be in 1..{len(blocks)}, got {count}")
        self.blocks = blocks
        self.device, self.host = torch.device(device), torch.device(host)
        self.swapped = list(range(len(blocks) - count, len(blocks)))
        self.ring = ring or Ring(self.device, slots)
        self.trace = trace
        self._packed: dict[int, _Packed] = {}
        self._installed: dict[int, int] = {}  # block -> slot its parameters point into right now
        self._last: int | None = None
        self._dir = 1
        self._moved: set[int] = set()
        self._handles: list[Any] = []
        pin = self.device.type == "cuda" and self.host.type == "cpu"
        for i in self.swapped:
            self._packed[i] = self._pack(blocks[i], pin)
        if not self._moved:
            raise ValueError("the swapped blocks hold no frozen parameter (freeze the base weights first)")
        self.ring.reserve(max(p.nbytes for p in self._packed.values()))
        for i in self.swapped:
            self._handles.append(blocks[i].register_forward_pre_hook(partial(self._before, i)))
            self._handles.append(blocks[i].register_forward_hook(partial(self._after, i)))
            owners: dict[int, tuple[nn.Module, list[str]]] = {}
            for module, name, _ in frozen_base_parameters(blocks[i]):
                owners.setdefault(id(module), (module, []))[1].append(name)
            for module, names in owners.values():
                self._guard(module, names, i)

    # ---- install ---------------------------------------------------------------------------
    def _pack(self, block: nn.Module, pin: bool) -> _Packed:
        params = [p for _, _, p in frozen_base_parameters(block)]
        offsets, total = [], 0
        for p in params:
            offsets.append(total)
            total += -(-_nbytes(p) // ALIGN) * ALIGN
        flat = torch.empty(max(total, 1), dtype=torch.uint8, device=self.host, pin_memory=pin)
        views = []
        with torch.no_grad():
            for p, off in zip(params, offsets):
                view = _view(flat, off, p.data)
                view.copy_(p.data)
                p.data = view
                views.append(view)
                self._moved.add(id(p))
        return _Packed(params, offsets, flat, views)

    def _guard(self, module: nn.Module, names: list[str], i: int) -> None:
        """`module.to(...)` etc. leave the swapped parameters where the offloader put them."""
        original = module._apply

        def _apply(fn, recurse=True):
            if i in self._installed:  # inside the block's run (fp8 storage casts per layer): as usual
                return original(fn, recurse)
            held = {n: module._parameters[n] for n in names}
            for n, p in held.items():
                if fn(torch.empty(0, dtype=p.dtype, device=p.device)).dtype != p.dtype:
                    raise UfoError(f"block swap: the dtype of the swapped weight {n} ({p.dtype}) cannot change after "
                                   "block swap was installed; set the dtype (or fp8 storage) before it")
                module._parameters[n] = None
            try:
                return original(fn, recurse)
            finally:
                module._parameters.update(held)

        module._apply = _apply

    def moves(self, param: torch.Tensor) -> bool:
        """True for a parameter this offloader keeps in host memory."""
        return id(param) in self._moved

    @property
    def host_bytes(self) -> int:
        return sum(p.nbytes for p in self._packed.values())

    # ---- run -------------------------------------------------------------------------------
    def _key(self, i: int) -> tuple[int, int]:
        return (id(self), i)

    def _before(self, i: int, module: nn.Module, args: Any) -> None:
        prev, self._last = self._last, i
        if prev is not None:
            self._dir = 1 if i > prev else -1 if i < prev else -self._dir
        for j in [j for j in self._installed if j != i]:
            # blocks do not nest, so a block still installed has finished without its forward hook:
            # checkpointing's recomputation stops early once it has what backward needs
            self._release(j)
        if i not in self._installed:
            self._adopt_changes(i)
        packed = self._packed[i]
        slot = self.ring.slot_of(self._key(i))
        if slot is None:
            slot = self.ring.load(self._key(i), packed.host, avoid=set())
            self._note("copy", i, slot)
        self.ring.use(slot)
        views = packed.slot_views.get(slot)
        if views is None:
            views = packed.slot_views[slot] = [_view(self.ring.buffers[slot], o, v)
                                               for o, v in zip(packed.offsets, packed.host_views)]
        for p, v in zip(packed.params, views):
            p.data = v
        self._installed[i] = slot
        avoid = {slot}
        for j in self._upcoming(i, self.ring.slots - 1):
            s = self.ring.slot_of(self._key(j))
            if s is None:
                s = self.ring.load(self._key(j), self._packed[j].host, avoid)
                if s is None:
                    break
                self._note("copy", j, s)
            avoid.add(s)
        if self.trace is not None:
            mine = [o[1] if o is not None and o[0] == id(self) else None for o in self.ring.owner]
            self.trace.append(("run", i, slot, tuple(mine)))

    def _after(self, i: int, module: nn.Module, args: Any, output: Any) -> None:
        self._release(i)

    def _release(self, i: int) -> None:
        """The block's parameters point at its host buffer again (layers that fp8 storage re-cast
        during the run let go of their device copies)."""
        packed = self._packed[i]
        for p, v in zip(packed.params, packed.host_views):
            p.data = v
        self._installed.pop(i, None)

    def _note(self, *event: Any) -> None:
        if self.trace is not None:
            self.trace.append(event)

    def _upcoming(self, i: int, k: int) -> list[int]:
        """The next `k` distinct swapped blocks expected after block `i` (see the module's docstring)."""
        order, n = self.swapped, len(self.swapped)
        p, d = order.index(i), self._dir
        grad = torch.is_grad_enabled()  # a forward with grad is followed by its backward
        out: list[int] = []
        for _ in range(2 * n + 2):
            if len(out) >= k:
                break
            q = p + d
            if 0 <= q < n:
                p = q
            elif d > 0 and not grad:
                p = 0  # inference: the next step starts again at the first swapped block
            else:
                d = -d  # a turn: the same block runs again, then the walk goes the other way
                continue
            j = order[p]
            if j != i and j not in out:
                out.append(j)
        return out

    def _adopt_changes(self, i: int) -> None:
        """Weights replaced from outside since the block last ran go into its host buffer."""
        packed = self._packed[i]
        changed = [k for k, (p, v) in enumerate(zip(packed.params, packed.host_views))
                   if p.data.data_ptr() != v.data_ptr()]  # fmt: skip
        if not changed:
            return
        self.ring.idle()
        with torch.no_grad():
            for k in changed:
                p, v = packed.params[k], packed.host_views[k]
                if p.dtype != v.dtype or p.shape != v.shape:
                    raise UfoError(f"block swap: a swapped weight of block {i} changed from {v.dtype} {tuple(v.shape)} "
                                   f"to {p.dtype} {tuple(p.shape)} after block swap was installed; set the dtype "
                                   "(or fp8 storage) before it")
                v.copy_(p.data)
                p.data = v
        self.ring.forget(self._key(i))


def install(block_lists: list[nn.ModuleList], count: int, device: torch.device | str, host: torch.device | str = "cpu",
            slots: int = 2, trace: list | None = None) -> list[BlockSwap]:
    """Block swap on each ModuleList (e.g. the experts of a two-expert model), all sharing one ring
    of `slots` device buffers: the experts run one at a time, so one ring serves them all."""
    ring = Ring(device, slots)
    return [BlockSwap(blocks, count, device, host, ring=ring, trace=trace) for blocks in block_lists]


def ignore_in_ddp(root: nn.Module, swaps: list[BlockSwap]) -> list[str]:
    """Tell DistributedDataParallel to leave the swapped (frozen) parameters alone: it would
    otherwise broadcast them at wrapping time and refuse a module whose parameters sit on two
    device types. They are identical on every process (loaded from the same files). Returns the names."""
    names = [n for n, p in root.named_parameters() if any(s.moves(p) for s in swaps)]
    earlier = list(getattr(root, "_ddp_params_and_buffers_to_ignore", []))
    torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(root, earlier + names)
    return names


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{nbytes / 2**10:.1f} KiB"


def describe(swaps: list[BlockSwap], total_blocks: int) -> str:
    """One line: what is swapped and what it costs where."""
    s = swaps[0]
    pinned = "pinned " if s.device.type == "cuda" and s.host.type == "cpu" else ""
    each = f" in each of {len(swaps)} denoisers" if len(swaps) > 1 else ""
    return (f"block swap: {len(s.swapped)} of {total_blocks} transformer blocks{each} in {pinned}{s.host.type} memory "
            f"({_size(sum(w.host_bytes for w in swaps))}), copied into {s.ring.slots} {s.device.type} buffers of "
            f"{_size(s.ring.nbytes)} just before each runs")
