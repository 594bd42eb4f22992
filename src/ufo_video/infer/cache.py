"""Optional inference step cache: diffusers' First Block Cache on the EasyAnimate transformer.

The reference speeds sampling up with TeaCache (reuse the transformer's residual when the input
changed little since the last step, threshold 0.08). diffusers 0.42 ships the same idea as a
generic hook, First Block Cache: run the first block every step, and when its output residual
moved less than `threshold` (relative mean abs) since the last fully computed step, skip the
remaining blocks and add their cached residual instead.

Two things diffusers 0.42.1 does not do for EasyAnimate, done here narrowly:

* `EasyAnimateTransformerBlock` is not in diffusers' `TransformerBlockRegistry`, so the hooks
  cannot find its outputs. It returns `(hidden_states, encoder_hidden_states)`; we register that.
* the EasyAnimate pipelines never open a `cache_context` around the transformer call (the hooks
  refuse to run without one). Classifier-free guidance is batched into one call in these
  pipelines, so one context per video is correct; `StepCache.session()` opens it and resets
  the cached state so no residual leaks from one video into the next.

Pyramid attention broadcast and FasterCache need the pipeline's current timestep, which the
EasyAnimate pipelines do not expose, so they are not offered.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, apply_first_block_cache
from diffusers.hooks.first_block_cache import _FBC_LEADER_BLOCK_HOOK
from diffusers.hooks.hooks import CacheContext, _set_cache_context
from diffusers.models.transformers.transformer_easyanimate import EasyAnimateTransformerBlock

CONTEXT_NAME = "cfg_batched"


def _register_easyanimate_block() -> None:
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry

    try:
        TransformerBlockRegistry.get(EasyAnimateTransformerBlock)
    except ValueError:
        TransformerBlockRegistry.register(
            EasyAnimateTransformerBlock,
            TransformerBlockMetadata(return_hidden_states_index=0, return_encoder_hidden_states_index=1),
        )


class StepCache:
    """First Block Cache on a transformer, with per-video sessions and a count of skipped steps."""

    def __init__(self, transformer: torch.nn.Module, threshold: float):
        _register_easyanimate_block()
        self.transformer = transformer
        self.threshold = threshold
        apply_first_block_cache(transformer, FirstBlockCacheConfig(threshold=threshold))
        head = next(iter(transformer.transformer_blocks))
        self._state = HookRegistry.check_if_exists_or_initialize(head).get_hook(_FBC_LEADER_BLOCK_HOOK).state_manager
        self.calls = 0
        self.skipped = 0
        transformer.register_forward_hook(self._count)

    def _count(self, module: torch.nn.Module, args: object, output: object) -> None:
        if self._state._context is None:
            return
        self.calls += 1
        self.skipped += int(not self._state.get_state().should_compute)

    @contextmanager
    def session(self) -> Iterator[None]:
        """One video: fresh cache state, a context for the hooks, counters reset."""
        HookRegistry.check_if_exists_or_initialize(self.transformer).reset_stateful_hooks()
        self.calls = self.skipped = 0
        _set_cache_context(self.transformer, CacheContext(CONTEXT_NAME))
        try:
            yield
        finally:
            _set_cache_context(self.transformer, None)

    def summary(self) -> str:
        return f"step cache (first-block, threshold {self.threshold:g}): skipped {self.skipped} of {self.calls} transformer steps"
