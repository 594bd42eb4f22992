"""The offloaders of `ufo_video.offload` on a toy model (CPU: host and device are both the CPU, so
copies are synchronous memcpys but the code path is the one CUDA runs): block swap's copy schedule
in forward and backward, its placement guard, bit-exact gradients; activation offload's hooks; and
why diffusers' group offloading is not used for training (docs/memory.md)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ufo_video.errors import UfoError
from ufo_video.offload import block_swap
from ufo_video.offload.activations import host_input_checkpointing


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.proj = nn.Linear(8, 8)
        self.gate = nn.Parameter(torch.randn(8))  # a frozen parameter outside any Linear (Wan's scale_shift_table)

    def forward(self, x):
        return x + self.gate * self.proj(self.norm(x))


class Toy(nn.Module):
    """Blocks in a ModuleList, checkpointed like diffusers' transformers (`ckpt`: the function)."""

    def __init__(self, n: int = 5):
        super().__init__()
        self.blocks = nn.ModuleList(Block() for _ in range(n))
        self.out = nn.Linear(8, 8)
        self.ckpt = None

    def forward(self, x):
        for b in self.blocks:
            x = self.ckpt(b, x) if self.ckpt is not None and torch.is_grad_enabled() else b(x)
        return self.out(x)


def _plain_ckpt(module, *args):
    return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)


def toy_with_lora(n: int = 5) -> Toy:
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(0)
    model = Toy(n)
    model.requires_grad_(False)
    model = inject_adapter_in_model(LoraConfig(r=2, target_modules=["proj"], init_lora_weights=False), model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    model.ckpt = _plain_ckpt
    return model


def grads_after_step(model: Toy, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss = model(x).square().mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    for p in model.parameters():
        p.grad = None
    return loss.detach(), grads


def test_swap_schedule_forward_backward_and_inference():
    model = toy_with_lora(5)
    trace: list = []
    [swap] = block_swap.install([model.blocks], 4, device="cpu", host="cpu", slots=2, trace=trace)
    assert swap.swapped == [1, 2, 3, 4]
    # only frozen base weights moved: every LoRA parameter is untouched
    assert all(not swap.moves(p) for n, p in model.named_parameters() if "lora_" in n)
    assert all(swap.moves(p) for n, p in model.blocks[3].named_parameters() if "lora_" not in n)
    assert not any(swap.moves(p) for p in model.blocks[0].parameters())
    seen = []  # during each run, where the block's weights point: its ring slot's buffer

    def where(i, module, args):
        storage = module.base_layer.weight.untyped_storage().data_ptr()
        seen.append((i, [b.data_ptr() for b in swap.ring.buffers].index(storage)))

    for i in swap.swapped:
        model.blocks[i].proj.register_forward_pre_hook(lambda m, a, i=i: where(i, m, a))
    x = torch.randn(2, 8)
    grads_after_step(model, x)
    assert seen == [(1, 0), (2, 1), (3, 0), (4, 1), (4, 1), (3, 0), (2, 1), (1, 0)]
    assert trace == [
        # forward: each block copied one block ahead into the other slot
        ("copy", 1, 0), ("copy", 2, 1), ("run", 1, 0, (1, 2)),
        ("copy", 3, 0), ("run", 2, 1, (3, 2)),
        ("copy", 4, 1), ("run", 3, 0, (3, 4)),
        ("run", 4, 1, (3, 4)),  # the last one: backward recomputes it first, then 3 (already there)
        # backward's recomputation, in reverse: the block before is copied while one recomputes
        ("run", 4, 1, (3, 4)),
        ("copy", 2, 1), ("run", 3, 0, (3, 2)),
        ("copy", 1, 0), ("run", 2, 1, (1, 2)),
        ("run", 1, 0, (1, 2)),
    ]
    trace.clear()
    with torch.no_grad():  # inference: after the last block the next step's first block comes in
        model(x)
    assert trace == [
        ("run", 1, 0, (1, 2)),
        ("copy", 3, 0), ("run", 2, 1, (3, 2)),
        ("copy", 4, 1), ("run", 3, 0, (3, 4)),
        ("copy", 1, 0), ("run", 4, 1, (1, 4)),
    ]
    # between runs every swapped weight points at its host buffer, not at a ring slot
    ring = {b.data_ptr() for b in swap.ring.buffers}
    for p in model.blocks[4].parameters():
        if swap.moves(p):
            assert p.untyped_storage().data_ptr() not in ring


@pytest.mark.parametrize("count,slots", [(2, 2), (5, 2), (3, 1), (4, 3)])
def test_swap_gives_bitwise_equal_losses_and_gradients(count, slots):
    plain, swapped = toy_with_lora(5), toy_with_lora(5)
    block_swap.install([swapped.blocks], count, device="cpu", host="cpu", slots=slots)
    for step in range(2):
        x = torch.randn(3, 8, generator=torch.Generator().manual_seed(step))
        loss_a, grads_a = grads_after_step(plain, x)
        loss_b, grads_b = grads_after_step(swapped, x)
        assert torch.equal(loss_a, loss_b)
        assert grads_a.keys() == grads_b.keys() and all(torch.equal(grads_a[k], grads_b[k]) for k in grads_a)
        with torch.no_grad():
            assert torch.equal(plain(x), swapped(x))


def test_swap_leaves_swapped_weights_on_the_host_under_to_and_refuses_a_dtype_change():
    model = toy_with_lora(3)
    [swap] = block_swap.install([model.blocks], 2, device="meta", host="cpu", slots=2)
    model.to("meta")  # what a pipeline's .to(device) or accelerate's prepare does
    for name, p in model.named_parameters():
        assert p.device.type == ("cpu" if swap.moves(p) else "meta"), name
    assert model.blocks[2].proj.lora_A.default.weight.device.type == "meta"  # LoRA follows the device
    with pytest.raises(UfoError, match="cannot change after block swap was installed"):
        model.to(torch.float16)


def test_swap_takes_in_weights_replaced_from_outside():
    """A weight replaced between runs (fusing a LoRA into it, say) is what the next run computes with."""
    plain, swapped = toy_with_lora(3), toy_with_lora(3)
    block_swap.install([swapped.blocks], 2, device="cpu", host="cpu", slots=2)
    x = torch.randn(2, 8)
    with torch.no_grad():
        swapped(x)
        for m in (plain, swapped):
            w = m.blocks[2].proj.base_layer.weight
            w.data = w.data * 2
        assert torch.equal(plain(x), swapped(x))


def test_swap_refuses_a_count_beyond_the_blocks():
    with pytest.raises(ValueError):
        block_swap.install([toy_with_lora(3).blocks], 4, device="cpu")


def test_activation_offload_packs_the_checkpointed_inputs_and_keeps_gradients():
    plain, offloaded = toy_with_lora(4), toy_with_lora(4)
    offloaded.ckpt = host_input_checkpointing()
    x = torch.randn(2, 8)
    loss_a, grads_a = grads_after_step(plain, x)
    loss_b, grads_b = grads_after_step(offloaded, x)
    assert torch.equal(loss_a, loss_b) and all(torch.equal(grads_a[k], grads_b[k]) for k in grads_a)
    stats = offloaded.ckpt.stats
    assert stats.tensors == 4 and stats.bytes == 4 * x.numel() * 4  # one saved input per block, nothing else


def test_activation_offload_with_block_swap():
    plain, both = toy_with_lora(4), toy_with_lora(4)
    both.ckpt = host_input_checkpointing()
    block_swap.install([both.blocks], 3, device="cpu", slots=2)
    x = torch.randn(2, 8)
    loss_a, grads_a = grads_after_step(plain, x)
    loss_b, grads_b = grads_after_step(both, x)
    assert torch.equal(loss_a, loss_b) and all(torch.equal(grads_a[k], grads_b[k]) for k in grads_a)


def test_diffusers_group_offloading_is_not_correct_for_lora_training():
    """What docs/memory.md reports about `diffusers.hooks.apply_group_offloading` (block_level) under
    PEFT LoRA + non-reentrant gradient checkpointing: each group moves the LoRA parameters with the
    base weights, and backward's recomputation onloads a block without ever offloading it again
    (the recomputation stops early, before the block's post-forward hook), so after one backward
    every block is on the device. If diffusers changes this, this test fails: re-evaluate then."""
    from diffusers.hooks import apply_group_offloading
    from diffusers.hooks import group_offloading as go

    model = toy_with_lora(3)
    events: list = []
    real_off, real_on = go.ModuleGroup.offload_, go.ModuleGroup.onload_

    def offload(self):
        events.append(("offload", sorted(n for m in self.modules for n, _ in m.named_parameters())))
        return real_off(self)

    def onload(self):
        events.append(("onload",))
        return real_on(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(go.ModuleGroup, "offload_", offload)
        mp.setattr(go.ModuleGroup, "onload_", onload)
        apply_group_offloading(model, onload_device=torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1)
        events.clear()
        model.train()
        model(torch.randn(2, 8)).sum().backward()
    block_groups = [e[1] for e in events if e[0] == "offload" and any("lora_A" in n for n in e[1])]
    assert block_groups and all("proj.lora_A.default.weight" in g for g in block_groups)  # LoRA moves too
    backward = events[[i for i, e in enumerate(events) if e[0] == "offload"][-1] + 1:]
    assert backward.count(("onload",)) == 3 and all(e[0] == "onload" for e in backward)  # never offloaded

