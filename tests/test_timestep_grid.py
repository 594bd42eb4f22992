"""The `uniform` scheme's training grid comes from each model's own scheduler config
(`ModelAdapter.training_timesteps`): EasyAnimate's is the reference's unshifted grid, bit for bit;
Wan's is the flow grid shifted by its scheduler's flow_shift, and the trainer draws from it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

import ufo_video
from test_train_helpers import make_dataset, write_config
from ufo_video.cli import main
from ufo_video.models.registry import load_model, model_shell
from ufo_video.models.wan.tiny import make_tiny_wan
from ufo_video.train import objective

ASSETS = Path(ufo_video.__file__).parent / "assets"


def _mean_sigma(grid: torch.Tensor, n: int = 20000, sigma_range=(0.0, 1.0)) -> float:
    """Mean of `n` trainer draws (the trainer's per-slot generators) of the `uniform` scheme."""
    draws = [objective.to_range(objective.sample_sigma("uniform", objective.sample_generator(0, 0, i, 0), grid=grid),
                                sigma_range) for i in range(n)]  # fmt: skip
    return torch.stack(draws).mean().item()


@pytest.mark.parametrize("where", ["shipped-configs", "tiny-base", "tiny-loaded"])
def test_easyanimate_grid_is_the_reference_unshifted_grid_bit_for_bit(where, tiny_model):
    if where == "tiny-loaded":  # a loaded scheduler (whose timesteps inference may have overwritten)
        model = load_model(tiny_model, components=("scheduler",))
        model.scheduler.set_timesteps(8, mu=1.0)
    else:
        model = model_shell(ASSETS / ("easyanimate-v5.1-12b-inp-configs" if where == "shipped-configs" else "tiny-base"))
    assert model.info.family == "easyanimate"
    grid = model.training_timesteps()
    assert grid.dtype == torch.float32 and len(grid) == 1000
    # by hand: {1000, 999, ..., 1}
    assert grid[0].item() == 1000 and grid[1].item() == 999 and grid[500].item() == 500 and grid[-1].item() == 1
    # the grid every family trained on before: a 1000-step shift-1 flow scheduler's timesteps
    before = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0).timesteps.to(torch.float32)
    assert torch.equal(grid, before) and torch.equal(grid, objective.unshifted_grid())
    assert model.training_timesteps() is grid  # built once per instance


@pytest.mark.parametrize("folder, shift", [("wan2.1-t2v-1.3b", 3.0), ("wan2.2-t2v-a14b", 3.0), ("wan2.2-ti2v-5b", 5.0)])
def test_wan_grid_is_the_flow_grid_shifted_by_its_flow_shift(folder, shift):
    model = model_shell(ASSETS / "wan-configs" / folder)
    grid = model.training_timesteps()
    expected = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift).timesteps.to(torch.float32)
    assert len(grid) == 1000 and torch.equal(grid, expected)

    def by_hand(s: float) -> float:  # shift * s / (1 + (shift - 1) * s), on the 0..1000 scale
        return 1000 * shift * s / (1 + (shift - 1) * s)

    assert grid[0].item() == 1000
    for index in (500, 750, 999):  # grid[i] is the shifted s = (1000 - i) / 1000
        assert grid[index].item() == pytest.approx(by_hand((1000 - index) / 1000), rel=1e-6)
    assert grid[500].item() == pytest.approx(750.0 if shift == 3.0 else 2500 / 3, rel=1e-6)
    assert grid[750].item() == pytest.approx(500.0 if shift == 3.0 else 625.0, rel=1e-6)
    # the explicit `shift` scheme with timestep_shift = flow_shift draws the same levels
    for i in range(50):
        a = objective.sample_sigma("uniform", objective.sample_generator(1, 0, i, 0), grid=grid)
        b = objective.sample_sigma("shift", objective.sample_generator(1, 0, i, 0), grid=grid, shift=shift)
        assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_wan_training_draws_are_shifted_and_easyanimate_draws_are_not(tiny_model):
    wan = _mean_sigma(model_shell(ASSETS / "wan-configs" / "wan2.1-t2v-1.3b").training_timesteps())
    # E[3s / (1 + 2s)], s ~ U(0, 1) = 1.5 * (1 - ln(3) / 2) = 0.676 (the standard error of 20k draws is 0.002)
    assert wan == pytest.approx(1.5 * (1 - math.log(3) / 2), abs=0.01)
    assert _mean_sigma(model_shell(tiny_model).training_timesteps()) == pytest.approx(0.5, abs=0.01)
    # an expert's range still applies on the shifted grid: A14B's low-noise expert, sigma in (0, 0.875)
    a14b = model_shell(ASSETS / "wan-configs" / "wan2.2-t2v-a14b")
    low = next(e for e in a14b.experts() if e.component == "transformer_2")
    mean = _mean_sigma(a14b.training_timesteps(), n=5000, sigma_range=low.sigma_range())
    assert mean == pytest.approx(0.875 * 1.5 * (1 - math.log(3) / 2), abs=0.015)


def test_a_scheduler_wan_does_not_sample_with_is_refused(tmp_path):
    import json

    from ufo_video.errors import UfoError

    model = make_tiny_wan(tmp_path / "wan", variant="t2v", seed=0)
    cfg_path = model / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "use_flow_sigmas": False}))
    with pytest.raises(UfoError, match="use_flow_sigmas"):
        model_shell(model).training_timesteps()


def test_the_trainer_draws_from_the_models_grid_inside_the_experts_range(tmp_path, monkeypatch):
    """A short A14B low-noise-expert run: every batch's sigmas come from the Wan grid (shifted),
    mapped into the expert's range."""
    model = make_tiny_wan(tmp_path / "a14b", variant="a14b", seed=0)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = objective.noise_batch

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append((kwargs["grid"], out.sigmas.detach().cpu()))
        return out

    monkeypatch.setattr(objective, "noise_batch", recording)
    cfg = write_config(tmp_path / "c.toml", model, make_dataset(tmp_path / "ds"), tmp_path / "out",
                       max_train_steps=2, checkpointing_steps=2, save_state=False)  # fmt: skip
    assert main(["train", str(cfg), "train.expert=transformer_2"]) == 0
    shifted = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0).timesteps.to(torch.float32)
    assert seen and all(torch.equal(grid, shifted) for grid, _ in seen)
    levels = set((0.875 * shifted / 1000).tolist())  # to_range(sigma, (0, 0.875)) of every grid entry
    sigmas = torch.cat([s for _, s in seen])
    assert all(0 < s < 0.875 for s in sigmas.tolist())
    assert all(min(abs(s - v) for v in levels) < 1e-6 for s in sigmas.tolist())
