"""Streaming strict loading (header check first, tensor by tensor, cast per tensor) and the
finiteness check of `model check`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ufo_video.cli import main
from ufo_video.errors import ModelLoadError
from ufo_video.models.check import check_model
from ufo_video.models.registry import load_model
from ufo_video.models.weights import check_finite, load_strict


class _Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(3, 2, bias=False)
        self.register_buffer("steps", torch.zeros(2, dtype=torch.int64))


def _write(folder: Path, state: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"))
    return folder


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(3, 4, generator=g), "a.bias": torch.randn(3, generator=g),
            "b.weight": torch.randn(2, 3, generator=g), "steps": torch.tensor([3, 4])}


def test_cast_per_tensor_equals_a_whole_cast(tmp_path: Path) -> None:
    folder = _write(tmp_path / "m", _state())
    model = load_strict(_Two, folder, dtype=torch.bfloat16)
    for key, value in _state().items():
        got = model.state_dict()[key]
        want = value.to(torch.bfloat16) if value.is_floating_point() else value
        assert got.dtype == want.dtype and torch.equal(got, want), key
    assert not any(t.is_meta for t in model.state_dict().values())


def test_renames_are_checked_from_headers_before_reading(tmp_path: Path, monkeypatch) -> None:
    state = {("x." + k if k != "steps" else k): v for k, v in _state().items()}
    folder = _write(tmp_path / "m", state)
    model = load_strict(_Two, folder, rename=lambda k: k.removeprefix("x."))
    assert torch.equal(model.a.weight, _state()["a.weight"])
    del state["x.b.weight"]
    folder = _write(tmp_path / "bad", state)
    from ufo_video.models import weights

    def no_reading(*a, **k):  # a name mismatch must be found before any tensor is read
        raise AssertionError("tensors read before the header check")

    monkeypatch.setattr(weights, "stream_tensors", no_reading)
    with pytest.raises(ModelLoadError, match=r"missing tensors \(1\): b\.weight"):
        load_strict(_Two, folder, rename=lambda k: k.removeprefix("x."))


def test_target_device_is_honoured(tmp_path: Path) -> None:
    folder = _write(tmp_path / "m", _state())
    model = load_strict(_Two, folder, device="cpu")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert torch.equal(model.steps, torch.tensor([3, 4]))


def test_weights_survive_the_file(tmp_path: Path) -> None:
    """The weights are the module's own memory, not views of a file that may change later."""
    folder = _write(tmp_path / "m", _state())
    model = load_strict(_Two, folder)
    _write(folder, {k: torch.zeros_like(v) for k, v in _state().items()})
    shutil.rmtree(folder)
    assert torch.equal(model.a.weight, _state()["a.weight"])


def test_check_finite_names_nan_and_inf_tensors(tmp_path: Path) -> None:
    state = _state()
    state["a.bias"][1] = float("nan")
    state["b.weight"][0, 0] = float("inf")
    folder = _write(tmp_path / "m", state)
    with pytest.raises(ModelLoadError) as err:
        check_finite([folder / "model.safetensors"], str(folder))
    text = str(err.value)
    assert "a.bias in model.safetensors (1 NaN, 0 inf of 3)" in text
    assert "b.weight in model.safetensors (0 NaN, 1 inf of 6)" in text and "a.weight" not in text
    assert check_finite([_write(tmp_path / "ok", _state()) / "model.safetensors"], "ok") == 4


def test_model_check_names_a_nan_tensor_and_reports_stored_dtypes(tiny_model: Path, tmp_path: Path, capsys) -> None:
    report = check_model(tiny_model)
    assert {c.name: c.dtypes for c in report.components}["transformer"] == ["float32"]
    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    wfile = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(wfile))
    key = sorted(state)[3]
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    save_file(state, str(wfile))
    assert main(["model", "check", str(folder), "--meta"]) == 0  # headers alone cannot see it
    capsys.readouterr()
    assert main(["model", "check", str(folder)]) == 2
    assert key in capsys.readouterr().err
    with pytest.raises(ModelLoadError, match="NaN or inf"):
        check_model(folder)


def test_streamed_model_equals_a_plain_load(tiny_model: Path) -> None:
    model = load_model(tiny_model, dtype=torch.bfloat16, components=("transformer",))
    plain = load_file(str(tiny_model / "transformer" / "diffusion_pytorch_model.safetensors"))
    for key, value in model.transformer.state_dict().items():
        assert torch.equal(value, plain[key].to(torch.bfloat16)), key
