"""Inference with LoRAs: weight 0 is the base model bitwise, fused ~ unfused, kohya == PEFT files,
two LoRAs at once, weight changes without reloading, the sweep (files + grid + json), a LoRA
for another model, and the guide's predict scripts."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from ufo_video.cli import main
from ufo_video.config import LoraSection
from ufo_video.infer.settings import GenerationSettings, LoraSpec, VideoRequest

REPO = Path(__file__).resolve().parent.parent
TINY = ["--sample-size", "32", "32", "--video-length", "5", "--steps", "2", "--dtype", "fp32"]
REQ = VideoRequest("a red ball rolls", "", 43)


def settings_for(model: Path, loras=(), fuse: bool = False) -> GenerationSettings:
    return GenerationSettings(model=str(model), sample_size=(32, 32), video_length=5, fps=8, num_inference_steps=2,
                              guidance_scale=6.0, memory_mode="model_full_load", weight_dtype="fp32",
                              loras=tuple(loras), fuse=fuse)  # fmt: skip


def _make_lora(model_dir: Path, out: Path, seed: int, preset: str) -> dict[str, Path]:
    """A random LoRA (lora_B randomised so it changes the output), saved as kohya and PEFT files."""
    from ufo_video.lora.formats import lora_from_adapter, save_lora, write_lora
    from ufo_video.lora.inject import add_lora
    from ufo_video.models.registry import load_model

    model = load_model(model_dir, components=("transformer",))
    add_lora(model, LoraSection(rank=4, network_alpha=2.0, target_modules=preset), "t")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.transformer.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.5)
    kohya = save_lora(out / f"ufo{seed}_kohya.safetensors", model, "t", {"note": "test"})
    peft = write_lora(out / f"ufo{seed}_peft.safetensors", lora_from_adapter(model, "t"))
    return {"kohya": kohya, "peft": peft}


@pytest.fixture(scope="module")
def loras(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    one = _make_lora(tiny_models["diffusers"], root, 1, "all-linear")
    two = _make_lora(tiny_models["diffusers"], root, 2, "attention")
    return {"a": one["kohya"], "a_peft": one["peft"], "b": two["kohya"]}


@pytest.fixture(scope="module")
def base_frames(tiny_models: dict[str, Path]) -> np.ndarray:
    from ufo_video.infer.engine import VideoGenerator

    return VideoGenerator(settings_for(tiny_models["diffusers"])).generate(REQ)


def _gen(model: Path, loras, fuse: bool = False):
    from ufo_video.infer.engine import VideoGenerator

    return VideoGenerator(settings_for(model, [LoraSpec(str(p), w) for p, w in loras], fuse))


def test_weight_zero_is_the_base_model_bitwise_and_weights_change_without_reload(tiny_model, loras, base_frames) -> None:
    gen = _gen(tiny_model, [(loras["a"], 0.0)])
    assert np.array_equal(gen.generate(REQ), base_frames)
    gen.set_lora_weights([0.8])
    strong = gen.generate(REQ)
    assert not np.array_equal(strong, base_frames)
    assert np.array_equal(strong, _gen(tiny_model, [(loras["a"], 0.8)]).generate(REQ))
    gen.set_lora_weights([0.0])
    assert np.array_equal(gen.generate(REQ), base_frames)


def test_fused_equals_unfused_and_kohya_equals_peft(tiny_model, loras) -> None:
    unfused = _gen(tiny_model, [(loras["a"], 0.7)]).generate_float(REQ)
    fused = _gen(tiny_model, [(loras["a"], 0.7)], fuse=True).generate_float(REQ)
    assert (fused - unfused).abs().max().item() < 1e-5
    assert torch.equal(_gen(tiny_model, [(loras["a_peft"], 0.7)]).generate_float(REQ), unfused)


def test_two_loras_at_once_each_with_its_weight(tiny_model, loras) -> None:
    only_a = _gen(tiny_model, [(loras["a"], 0.6)]).generate(REQ)
    both = _gen(tiny_model, [(loras["a"], 0.6), (loras["b"], 0.9)])
    together = both.generate(REQ)
    assert not np.array_equal(together, only_a)
    both.set_lora_weights([0.6, 0.0])  # second switched off: exactly the first alone
    assert np.array_equal(both.generate(REQ), only_a)


def test_unfused_lora_under_fp8_storage_in_bf16(tiny_model, loras) -> None:
    """The reference's default memory mode: fp8 weights, bf16 compute, with an fp32 LoRA file."""
    from dataclasses import replace

    from ufo_video.infer.engine import VideoGenerator

    s = replace(settings_for(tiny_model, [LoraSpec(str(loras["a"]), 0.8)]),
                memory_mode="model_cpu_offload_and_qfloat8", weight_dtype="bf16")  # fmt: skip
    gen = VideoGenerator(s, log=lambda _: None)
    with_lora = gen.generate_float(REQ)
    gen.set_lora_weights([0.0])
    assert torch.isfinite(with_lora).all() and not torch.equal(with_lora, gen.generate_float(REQ))


def test_cli_lora_flags_sidecar_and_reproduction(tiny_model, loras, tmp_path: Path, capsys) -> None:
    out = tmp_path / "v.mp4"
    argv = ["generate", "--model", str(tiny_model), "--prompt", REQ.prompt, *TINY, "--out", str(out),
            "--lora", f"{loras['a']}:0.6", "--lora", str(loras["b"])]  # fmt: skip
    assert main(argv) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert [(Path(x["path"]).name, x["weight"]) for x in meta["settings"]["loras"]] == [
        (loras["a"].name, 0.6), (loras["b"].name, 0.15)]  # default weight 0.15  # fmt: skip
    assert main(["generate", "--from-sidecar", str(out.with_suffix(".json")), "--out", str(tmp_path / "r.mp4")]) == 0
    assert "reproduced exactly" in capsys.readouterr().out


def test_lora_for_another_model_is_refused_with_one_message(tiny_model, tmp_path: Path, capsys) -> None:
    from safetensors.torch import save_file

    bad = tmp_path / "other.safetensors"
    key = "lora_unet__transformer_blocks_7_attn1_to_q"  # the tiny model has 2 blocks
    save_file({f"{key}.lora_down.weight": torch.zeros(4, 32), f"{key}.lora_up.weight": torch.zeros(32, 4),
               f"{key}.alpha": torch.tensor(4.0)}, str(bad))  # fmt: skip
    assert main(["generate", "--model", str(tiny_model), "--prompt", "x", *TINY, "--lora", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "transformer_blocks" in err and err.count("\n") <= 3


def test_sweep_writes_each_weight_a_labelled_grid_and_json(tiny_model, loras, base_frames, tmp_path: Path) -> None:
    out_dir = tmp_path / "sweep"
    assert main(["sweep", "--model", str(tiny_model), "--prompt", REQ.prompt, *TINY, "--lora", str(loras["a"]),
                 "--weights", "0,0.5,1.0", "--out-dir", str(out_dir)]) == 0  # fmt: skip
    record = json.loads((out_dir / "sweep.json").read_text())
    assert [v["file"] for v in record["videos"]] == ["alpha_0.0.mp4", "alpha_0.5.mp4", "alpha_1.0.mp4"]
    assert record["weights"] == [0.0, 0.5, 1.0] and record["seed"] == 43
    hashes = [json.loads((out_dir / v["sidecar"]).read_text())["frames_sha256"] for v in record["videos"]]
    from ufo_video.infer.outputs import frames_sha256

    assert hashes[0] == frames_sha256(base_frames) and len(set(hashes)) == 3
    with av.open(str(out_dir / record["grid"])) as c:
        grid = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    name_w = 6 * min(18, len(Path(loras["a"]).stem)) + 6  # the checkpoint names, in a column on the left
    assert grid.shape == (5, 14 + 32, name_w + 3 * 32 + 2 * 2, 3)
    assert grid[:, :14].max() > 200  # the label text is drawn in white on black
    assert main(["sweep", "--model", str(tiny_model), "--prompt", "x", "--lora", str(loras["a"]), "--weights", "a,b"]) == 2


def test_predict_scripts_run_against_a_tiny_model(tiny_model, loras, tmp_path: Path, capsys) -> None:
    """predict_t2v.py as a real subprocess with the venv's python; predict_i2v.py in-process."""
    from PIL import Image

    out = tmp_path / "t2v"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run(
        [sys.executable, str(REPO / "predict_t2v.py"), f"model_name={tiny_model}", "video_length=5",
         "sample_size=[32,32]", "num_inference_steps=2", "weight_dtype=fp32", f"save_path={out}",
         f"lora_path={loras['a']}", "GPU_memory_mode=model_full_load"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["00000001.json", "00000001.mp4"]
    meta = json.loads((out / "00000001.json").read_text())
    assert meta["settings"]["loras"][0]["weight"] == 0.15 and meta["settings"]["num_inference_steps"] == 2

    image = tmp_path / "start.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(image)
    i2v = tmp_path / "i2v"
    args = [f"model_name={tiny_model}", "video_length=6", "sample_size=[32,32]", "num_inference_steps=2",
            f"save_path={i2v}", f"validation_image_start={image}", "weight_dtype=fp32"]  # fmt: skip
    assert _run_script("predict_i2v.py", args) == 0
    assert "video_length 6 is not 4k+1 (the VAE compresses time 4x causally)" in capsys.readouterr().out
    assert (i2v / "00000001.mp4").is_file()
    assert json.loads((i2v / "00000001.json").read_text())["request"]["image"] == str(image.resolve())

    assert _run_script("predict_t2v.py", [f"model_name={tmp_path / 'absent'}"]) == 2
    err = capsys.readouterr().err
    assert "model folder not found" in err and "ufo-video model make-tiny models/tiny" in err
    assert _run_script("predict_t2v.py", ["steps=3"]) == 2
    assert "variables: GPU_memory_mode" in capsys.readouterr().err


def _run_script(name: str, args: list[str]) -> int:
    old = sys.argv
    sys.argv = [name, *args]
    try:
        runpy.run_path(str(REPO / name), run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv = old
    return 0
