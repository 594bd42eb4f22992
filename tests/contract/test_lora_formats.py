"""Contract of LoRA files, for every declared variant: a trained LoRA goes through every format
its family supports (`adapter.lora_formats()`) with `ufo-video lora convert` and comes back to the
family's default format bit for bit (modules, down/up tensors, alpha; the same keys). Names are
checked against the tiny folder (`--model`), quicker than the bundled real configs."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from contract.families import VARIANTS
from contract.helpers import first_lora, supports_training
from ufo_video.cli import main


@pytest.mark.parametrize("v", VARIANTS, ids=lambda v: v.id)
def test_lora_round_trips_through_every_format_bit_exact(v, contract_models, trainings, tmp_path):
    from ufo_video.lora.formats import read_lora
    from ufo_video.models.registry import ADAPTERS

    if not supports_training(v.family):
        pytest.skip(f"{v.family}: its adapter refuses training (check_trainable)")
    cls = ADAPTERS[v.family]
    formats = cls.lora_formats()
    assert cls.default_lora_format in formats
    src = first_lora(trainings, v).lora
    source = read_lora(src)
    assert source.format == cls.default_lora_format
    previous = src
    for i, fmt in enumerate([*[f for f in formats if f != source.format], source.format]):
        out = tmp_path / f"{i}-{fmt}.safetensors"
        assert main(["lora", "convert", str(previous), str(out), "--to", fmt, "--model", str(contract_models(v))]) == 0
        step = read_lora(out)
        assert step.format == fmt and len(step.modules) == len(source.modules), fmt
        previous = out
    back = read_lora(previous)
    assert back.modules.keys() == source.modules.keys()
    for name, m in source.modules.items():
        b = back.modules[name]
        assert torch.equal(b.down, m.down) and torch.equal(b.up, m.up) and b.alpha == m.alpha, name
    with safe_open(str(src), framework="pt") as a, safe_open(str(previous), framework="pt") as b:
        assert set(a.keys()) == set(b.keys())
