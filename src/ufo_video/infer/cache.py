"""Optional inference step cache: diffusers' First Block Cache through its public API.

The reference speeds sampling up with TeaCache (reuse the transformer's residual when the input
changed little since the last step, threshold 0.08). diffusers ships the same idea as a generic
hook, First Block Cache: run the first block every step, and when its output residual moved less
than `threshold` (relative mean abs) since the last fully computed step, skip the remaining blocks
and add their cached residual instead.

Public API only: `transformer.enable_cache(FirstBlockCacheConfig)`, `disable_cache()` and
`transformer.cache_context(name)`; each video re-enables the cache, which drops every cached state. What a family needs beyond that (registering its block class
with diffusers' block registry when diffusers lacks it; a pipeline that opens no cache context) is
the adapter's `step_cache_blocks`. Each video runs inside one fresh `cache_context`, so no residual
leaks from one video into the next; pipelines that open their own contexts ("cond" / "uncond")
replace ours for each call, which is diffusers' own mechanism.

Skipped steps are counted by hooks on the sub-modules of the second block: the cache replaces a
skipped block's forward, so its sub-modules run only on fully computed steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import torch
from diffusers.hooks import FirstBlockCacheConfig

CONTEXT_NAME = "ufo-video"


def _register_block(model) -> None:
    """The adapter's block class -> diffusers' TransformerBlockRegistry. diffusers 0.42.1 keeps that
    registry only in `diffusers.hooks._helpers` (no public export); this is the one narrow use,
    and a test fails if a family's registration stops being needed."""
    spec = model.step_cache_blocks()
    if spec is None:
        return
    block_cls, meta = spec
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry

    try:
        TransformerBlockRegistry.get(block_cls)
    except ValueError:
        TransformerBlockRegistry.register(block_cls, TransformerBlockMetadata(**meta))


def _block_lists(transformer: torch.nn.Module) -> list[torch.nn.ModuleList]:
    """The transformer's block stacks (ModuleLists of 2+ blocks), as diffusers' hooks find them."""
    return [m for m in transformer.children() if isinstance(m, torch.nn.ModuleList) and len(m) > 1]


class StepCache:
    """First Block Cache on a model's denoisers, with per-video sessions and a count of skipped steps."""

    def __init__(self, model, threshold: float):
        _register_block(model)
        self.threshold = threshold
        self.transformers = [model.expert_module(e.component) for e in model.experts()
                             if e.component == "transformer" or e.component in model.extra_components]  # fmt: skip
        self.calls = 0
        self.computed = 0
        for transformer in self.transformers:
            transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
            transformer.register_forward_pre_hook(self._begin_call)
            transformer.register_forward_hook(self._end_call)
            stacks = _block_lists(transformer)
            if stacks:
                for child in stacks[0][1].children():
                    child.register_forward_pre_hook(self._mark_computed)
        self._ran = False

    def _begin_call(self, module: torch.nn.Module, args: object) -> None:
        self.calls += 1
        self._ran = False

    def _mark_computed(self, module: torch.nn.Module, args: object) -> None:
        self._ran = True

    def _end_call(self, module: torch.nn.Module, args: object, output: object) -> None:
        self.computed += int(self._ran)

    @property
    def skipped(self) -> int:
        return self.calls - self.computed

    @contextmanager
    def session(self) -> Iterator[None]:
        """One video: fresh cache state and a cache context on every denoiser, counters reset."""
        for transformer in self.transformers:
            transformer.disable_cache()
            transformer.enable_cache(FirstBlockCacheConfig(threshold=self.threshold))
        self.calls = self.computed = 0
        with _contexts(self.transformers, CONTEXT_NAME):
            yield

    def summary(self) -> str:
        return f"step cache (first-block, threshold {self.threshold:g}): skipped {self.skipped} of {self.calls} transformer steps"


@contextmanager
def _contexts(transformers: list[torch.nn.Module], name: str) -> Iterator[None]:
    if not transformers:
        yield
        return
    with transformers[0].cache_context(name), _contexts(transformers[1:], name):
        yield
