"""Contracts of training, for every declared variant: every family registered declares variants;
two training steps write a finite LoRA (per expert); training from the latent cache equals
encoding every step, losses and LoRA bit for bit."""

from __future__ import annotations

import math

import pytest
import torch

from contract.families import FAMILIES, VARIANTS, Variant
from contract.helpers import cache_mode, experts, first_lora, supports_training
from test_train_helpers import losses, write_config
from ufo_video.cli import main

BY_ID = pytest.mark.parametrize("v", VARIANTS, ids=lambda v: v.id)


def _needs_training(v: Variant) -> None:
    if not supports_training(v.family):
        pytest.skip(f"{v.family}: its adapter refuses training (check_trainable)")


def test_every_registered_family_declares_its_contract_variants():
    from ufo_video.models.registry import ADAPTERS

    missing = sorted(set(ADAPTERS) - set(FAMILIES))
    assert not missing, f"add a line for {missing} to tests/contract/families.py"
    assert set(FAMILIES) <= set(ADAPTERS), "families.py names a family the registry does not know"
    for family, declared in FAMILIES.items():
        assert declared, family
        choices = ADAPTERS[family].tiny_choices()
        for v in declared:
            assert v.family == family and v.layout in choices["layout"] and v.variant in choices["variant"], v


@BY_ID
def test_two_training_steps_write_a_finite_trained_lora_per_expert(v, contract_models, contract_dataset, trainings,
                                                                  tmp_path, capsys):
    """Each expert trains on its own (`train.expert`, from `adapter.experts()`); a multi-expert
    model without `train.expert` is refused before any checkpoint is written."""
    _needs_training(v)
    names = experts(contract_models(v))
    if names != ("",):
        cfg = write_config(tmp_path / "c.toml", contract_models(v), contract_dataset, tmp_path / "out")
        assert main(["train", str(cfg), *trainings.overrides(v, "")]) == 2
        assert "set train.expert" in capsys.readouterr().err
        assert not list((tmp_path / "out").glob("checkpoint-*"))
    for expert in names:
        run = trainings(v, expert)
        steps = run.losses()
        assert [s for s, _ in steps] == [1, 2] and all(math.isfinite(x) for _, x in steps), steps
        meta = run.metadata()
        assert meta["ufo_base_family"] == v.family
        assert meta.get("ufo_expert", "") == expert  # multi-expert files name their expert; others none
        from ufo_video.lora.formats import read_lora

        lora = read_lora(run.lora)
        assert lora.modules and all(torch.isfinite(m.down).all() and torch.isfinite(m.up).all() for m in lora.modules.values())
        assert any(m.up.abs().max() > 0 for m in lora.modules.values()), "two steps left the LoRA at zero"


@BY_ID
def test_training_from_the_cache_equals_encoding_every_step(v, trainings, tmp_path):
    """`data cache`, then the same run from the cache: the same per-step losses and the same LoRA,
    bit for bit (the cache stores the posterior's mean and std and the run samples per step, and
    text dropout draws alike); text only where the model has text-to-video (`cache_mode`), else with
    its image conditioning."""
    _needs_training(v)
    run = first_lora(trainings, v, cache_mode(trainings.models(v)))
    cache = [f"data.cache_dir={tmp_path / 'cache'}"]
    assert main(["data", "cache", str(run.config), *run.overrides, *cache]) == 0
    out = tmp_path / "cached"
    assert main(["train", str(run.config), *run.overrides, *cache, "data.cache_latents=true",
                 f"train.output_dir={out}"]) == 0  # fmt: skip
    assert losses(out) == run.losses()
    from ufo_video.lora.formats import read_lora

    a, b = read_lora(run.lora), read_lora(out / "checkpoint-2.safetensors")
    assert a.modules.keys() == b.modules.keys()
    assert all(torch.equal(a.modules[k].down, b.modules[k].down) and torch.equal(a.modules[k].up, b.modules[k].up)
               for k in a.modules)  # fmt: skip
