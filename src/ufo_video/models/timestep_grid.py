"""Training timestep grids built from a model's own scheduler config.

The trainer's `uniform` weighting scheme draws an index uniformly and trains at that entry of a
grid, so the grid decides which noise levels a LoRA sees most. Each family builds its grid in
`ModelAdapter.build_training_timesteps` from its scheduler config with the helpers here (generic
flow-matching arithmetic through diffusers' own scheduler class, no family knowledge), so the
trainer never hard-codes one schedule for every model.

Grids are float32 timesteps on the 0..1000 scale the transformers take (sigma * 1000), in the
scheduler's own order (descending, 1000 first).
"""

from __future__ import annotations

from typing import Any

import torch

from ufo_video.models.configs import read_json

#: the timestep scale the transformers take (sigma * 1000), whatever num_train_timesteps says
TIMESTEP_SCALE = 1000


def scheduler_config(adapter: Any) -> dict[str, Any]:
    """The model's scheduler config: the loaded scheduler's, or the folder's
    `scheduler/scheduler_config.json` when the scheduler was not loaded (benchmarks build only a
    transformer). Read from the config, never from the scheduler's current `timesteps`, which
    inference overwrites in `set_timesteps`."""
    if adapter.scheduler is not None:
        return dict(adapter.scheduler.config)
    return read_json(adapter.info.path / "scheduler" / "scheduler_config.json")


def _to_scale(timesteps: torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
    grid = timesteps.to(torch.float32).clone()
    if num_train_timesteps != TIMESTEP_SCALE:  # 1000 in every shipped config: left bit for bit
        grid = grid * (TIMESTEP_SCALE / num_train_timesteps)
    return grid


def flow_match_grid(config: dict[str, Any]) -> torch.Tensor:
    """`FlowMatchEulerDiscreteScheduler(**config).timesteps` at construction: its training grid.
    With `use_dynamic_shifting` the constructor leaves it unshifted (the shift depends on the
    resolution and is applied only when sampling); otherwise it is shifted by the config's `shift`."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler.from_config(config)
    return _to_scale(sched.timesteps, int(sched.config.num_train_timesteps))


def shifted_flow_grid(num_train_timesteps: int, shift: float) -> torch.Tensor:
    """The `num_train_timesteps`-step flow grid s in {1, ..., 1/N} mapped by the static time shift
    s' = shift * s / (1 + (shift - 1) * s), built by diffusers' flow-matching scheduler with that
    shift (shift 1.0 gives the unshifted grid)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=int(num_train_timesteps), shift=float(shift))
    return _to_scale(sched.timesteps, int(num_train_timesteps))
