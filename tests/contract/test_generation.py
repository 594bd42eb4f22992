"""Contracts of generation, for every declared variant:

- `ufo-video generate` with trained LoRAs equals the family's diffusers pipeline loaded from the
  same folder with the same LoRAs (`load_lora_weights` + `set_adapters`), frame for frame, for
  each task the model has (with a start image for image-to-video);
- what the pipeline passes its transformer for a start image equals `training_conditioning`;
- a LoRA of another family is refused with one line naming the file.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contract.families import FAMILIES, VARIANTS, Variant
from contract.helpers import experts, first_lora, geometry, model_index_class, shell, supports_training
from test_train_helpers import own_memory
from ufo_video.cli import main

BY_ID = pytest.mark.parametrize("v", VARIANTS, ids=lambda v: v.id)
PROMPT, NEGATIVE, SEED, STEPS, GUIDANCE, FPS = "a cat on a car", "dog", 7, 3, 5.0, 8
#: LoRA weights when one file is applied, and when one per expert (multi-expert models)
WEIGHTS = {1: (0.7,), 2: (0.5, 0.9)}


def _start_image(path: Path, side: int) -> Path:
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def _ours(folder: Path, out: Path, loras: list[tuple[Path, float]], image: Path | None, side: int, frames: int) -> np.ndarray:
    args = [arg for path, w in loras for arg in ("--lora", f"{path}:{w}")] + (["--image", str(image)] if image else [])
    assert main(["generate", "--model", str(folder), "--prompt", PROMPT, "--negative-prompt", NEGATIVE,
                 "--video-length", str(frames), "--sample-size", str(side), str(side), "--steps", str(STEPS),
                 "--seed", str(SEED), "--fps", str(FPS), "--dtype", "fp32", "--device", "cpu", "--guidance-scale", str(GUIDANCE),
                 "--format", "png", "--out", str(out), *args]) == 0  # fmt: skip
    return np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))])


def _reference_pipeline(folder: Path, task: str):
    """diffusers' pipeline for `task` from the folder in fp32, every tensor moved into memory of its own.

    The class: `DiffusionPipeline.from_pretrained` (the folder's model_index) when that is the
    class the adapter runs the task with, else that class's own `from_pretrained` (a text-to-video
    folder's image-to-video pipeline). Why the copies: `from_pretrained` leaves each weight a view
    into the memory-mapped safetensors file, at its offset in the file (in these tiny files only
    8-byte aligned); ufo-video's loader reads each tensor into a buffer of its own. MKL's sgemm
    (not in its reproducible CNR mode, e.g. on AMD EPYC) picks its summation order for a one-row
    product by the weight's 16-byte alignment, which moves a pixel by 1/255 now and then. Copying
    changes no value and no operation, only where the bytes lie, so the comparison stays bit-exact."""
    from diffusers import DiffusionPipeline

    from ufo_video.models.registry import load_model

    wanted = type(load_model(folder).pipeline(task))
    cls = DiffusionPipeline if model_index_class(folder) == wanted.__name__ else wanted
    pipe = cls.from_pretrained(str(folder), torch_dtype=torch.float32)
    assert type(pipe) is wanted
    pipe.set_progress_bar_config(disable=True)
    return own_memory(pipe)


def _applied(module: torch.nn.Module, adapter: str) -> int:
    return sum(1 for _, m in module.named_modules() if hasattr(m, "lora_A") and adapter in m.lora_A)


def _peft_inject(module: torch.nn.Module, peft_file: Path, name: str, weight: float) -> None:
    """PEFT's own injection of a PEFT-format file (config from diffusers' `lora_adapter_metadata`)."""
    import json

    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from peft.tuners.lora import LoraLayer
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(peft_file), framework="pt") as handle:
        meta = json.loads(handle.metadata()["lora_adapter_metadata"])
    config = LoraConfig(**{k.removeprefix("transformer."): v for k, v in meta.items()})
    inject_adapter_in_model(config, module, adapter_name=name)
    state = {k.removeprefix("transformer."): t for k, t in load_file(str(peft_file)).items()}
    result = set_peft_model_state_dict(module, state, adapter_name=name)
    assert not result.unexpected_keys, result.unexpected_keys
    for layer in module.modules():
        if isinstance(layer, LoraLayer) and name in layer.lora_A:
            layer.set_scale(name, weight)


def _load_reference_loras(pipe, loras: list[tuple[Path, float, str]], tmp_path: Path) -> None:
    """Each file into its expert's component, every module applied, at its weight.

    A pipeline with diffusers' LoRA loader reads the file as ufo-video wrote it
    (`load_lora_weights` + `set_adapters`). Where diffusers has none for the family (0.42.1's
    EasyAnimate pipelines and transformer), PEFT itself injects the file converted by
    `ufo-video lora convert --to peft`: still an implementation independent of ufo-video's."""
    from ufo_video.lora.formats import read_lora

    names = []
    for i, (path, weight, component) in enumerate(loras):
        name = f"ufo{i}"
        if hasattr(pipe, "load_lora_weights"):
            into = {} if component == "transformer" else {f"load_into_{component}": True}
            pipe.load_lora_weights(str(path), adapter_name=name, **into)
        else:
            peft = tmp_path / f"{name}-peft.safetensors"
            assert main(["lora", "convert", str(path), str(peft), "--to", "peft"]) == 0
            _peft_inject(getattr(pipe, component), peft, name, weight)
        assert _applied(getattr(pipe, component), name) == len(read_lora(path).modules), f"{path}: modules not applied"
        names.append(name)
    if hasattr(pipe, "set_adapters"):
        pipe.set_adapters(names, [w for _, w, _ in loras])


def _theirs(pipe, folder: Path, task: str, image: Path | None, side: int, frames: int) -> np.ndarray:
    """The call `generate` makes: the generic arguments, the task's inputs and the adapter's
    `pipeline_defaults` (what the family's pipeline does not pick for this model itself)."""
    model = shell(folder)
    inputs = {} if task == "t2v" else model.pipeline_inputs(task, Image.open(image).convert("RGB"), None, frames, (side, side))
    inputs.update(model.pipeline_defaults(task, steps=STEPS, guidance_scale=GUIDANCE, fps=FPS))
    result = pipe(prompt=PROMPT, negative_prompt=model.pipeline_negative_prompt(NEGATIVE), num_frames=frames,
                  height=side, width=side, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                  generator=torch.Generator("cpu").manual_seed(SEED), output_type="pt", **inputs)  # fmt: skip
    frames_ = result.frames[0].permute(0, 2, 3, 1).float().clamp(0, 1)
    return (frames_ * 255).round().to(torch.uint8).numpy()


@BY_ID
def test_generate_with_trained_loras_equals_the_diffusers_pipeline(v, contract_models, trainings, tmp_path):
    if not supports_training(v.family):
        pytest.skip(f"{v.family}: its adapter refuses training (check_trainable)")
    folder = contract_models(v)
    if model_index_class(folder) is None:
        pytest.skip(f"{v.id}: not in the diffusers layout (no model_index.json)")
    side, frames = geometry(folder)
    names = experts(folder)
    weights = WEIGHTS[len(names)]
    loras = [(trainings(v, e).lora, w, e or "transformer") for e, w in zip(names, weights)]
    image = _start_image(tmp_path / "start.png", side)
    tasks = [t for t in ("t2v", "i2v") if t in shell(folder).tasks]
    assert tasks, f"{v.id} has neither t2v nor i2v"
    for task in tasks:
        start = image if task == "i2v" else None
        ours = _ours(folder, tmp_path / f"ours-{task}", [(p, w) for p, w, _ in loras], start, side, frames)
        pipe = _reference_pipeline(folder, task)
        (tmp_path / task).mkdir()
        _load_reference_loras(pipe, loras, tmp_path / task)
        theirs = _theirs(pipe, folder, task, start, side, frames)
        assert ours.shape == theirs.shape == (frames, side, side, 3), task
        assert np.array_equal(ours, theirs), f"{v.id} {task}: max diff {np.abs(ours.astype(int) - theirs).max()}"


@pytest.mark.parametrize("v", [v for v in VARIANTS], ids=lambda v: v.id)
def test_pipeline_conditioning_for_a_start_image_equals_training_conditioning(v, contract_models):
    """Capture the transformer's inputs inside the family's image-to-video pipeline (a forward
    pre-hook on every expert), read back as named tensors (`pipeline_call_conditioning`), and
    compare with `training_conditioning` for the same start image repeated over the clip, in the
    draw whose kind is `first` (the start-image case). A model whose training draws no image
    conditioning must get none from its pipeline either. Text, where the family names it, equals
    `encode_text`. The pipeline's own start-image noise is off (`noiseless_pipeline_inputs`);
    noise items (`conditioning_noise_items`: inputs the pipeline fills with its own noise) agree
    in shape. Two steps: one step divides by zero in a scheduler with a terminal shift (diffusers
    stretches the schedule by 1 - its last sigma, which is 0 then). A family that cannot train
    yet has no training conditioning to compare."""
    if not supports_training(v.family):
        pytest.skip(f"{v.family}: its adapter refuses training (check_trainable)")
    from ufo_video.models.registry import load_model

    folder = contract_models(v)
    if "i2v" not in shell(folder).tasks:
        pytest.skip(f"{v.id} has no image-to-video")
    side, frames = geometry(folder)
    model = load_model(folder)
    image = np.random.default_rng(1).integers(0, 255, (side, side, 3), dtype=np.uint8)
    captured: list[dict] = []

    def grab(module, args, kwargs):
        bound = inspect.signature(module.forward).bind(*args, **kwargs)
        captured.append({k: (t.clone() if isinstance(t, torch.Tensor) else t) for k, t in bound.arguments.items()})

    hooks = [model.expert_module(e.component).register_forward_pre_hook(grab, with_kwargs=True) for e in model.experts()]
    pipe = model.pipeline("i2v")
    pipe.set_progress_bar_config(disable=True)
    pil = Image.fromarray(image)
    with torch.no_grad():
        pipe(prompt="a cat", negative_prompt=model.pipeline_negative_prompt(None), num_frames=frames, height=side,
             width=side, num_inference_steps=2, guidance_scale=1.0, generator=torch.Generator("cpu").manual_seed(0),
             output_type="latent", **model.pipeline_inputs("i2v", pil, None, frames, (side, side)),
             **model.noiseless_pipeline_inputs("i2v"))  # fmt: skip
    for hook in hooks:
        hook.remove()
    seen = model.pipeline_call_conditioning(captured[0])

    pixels = torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1)[None, :, None].repeat(1, 1, frames, 1, 1)
    with torch.no_grad():
        latents = model.encode_video(pixels)
        draws = [model.training_conditioning(pixels, latents, [torch.Generator().manual_seed(s)], "inpaint") for s in range(32)]
        text = model.encode_text(["a cat"], "cpu")
    cond = next((c for c, kinds in draws if kinds == ["first"]), None)
    if cond is None:  # no image conditioning in training: the pipeline passes none either
        assert all(not c for c, _ in draws), f"{v.id}: training draws image conditioning but never the start-image kind"
        cond = {}
    assert set(seen) - set(model.text_items) == set(cond), (sorted(seen), sorted(cond))
    for name, tensor in cond.items():
        if name in model.conditioning_noise_items:
            assert seen[name].shape == tensor.shape, (name, seen[name].shape, tensor.shape)
            continue
        assert torch.allclose(seen[name], tensor.to(seen[name].dtype), atol=1e-4), name
    for name in set(seen) & set(model.text_items):
        assert torch.equal(seen[name], text[name]), name


def _other_family_lora(trainings, family: str) -> Path | None:
    for other, declared in FAMILIES.items():
        if other != family and supports_training(other):
            return first_lora(trainings, declared[0]).lora
    return None


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_lora_of_another_family_is_refused_naming_the_file(family, contract_models, trainings, tmp_path, capsys):
    lora = _other_family_lora(trainings, family)
    if lora is None:
        pytest.skip("no other registered family can train a LoRA")
    v: Variant = FAMILIES[family][0]
    folder = contract_models(v)
    side, frames = geometry(folder)
    image = [] if "t2v" in shell(folder).tasks else ["--image", str(_start_image(tmp_path / "s.png", side))]
    capsys.readouterr()
    assert main(["generate", "--model", str(folder), "--prompt", "x", "--video-length", str(frames), "--sample-size",
                 str(side), str(side), "--steps", "1", "--dtype", "fp32", "--out", str(tmp_path / "o.mp4"),
                 "--lora", str(lora), *image]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(lora) in err.splitlines()[0] and "Traceback" not in err, err
    assert err.strip().count("\n") == 0, f"more than one line:\n{err}"
    assert not (tmp_path / "o.mp4").exists()
