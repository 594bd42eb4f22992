"""Unit tests of the trainer's maths and machinery: objective, masks, state files, checkpoints, flags."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from ufo_video.errors import ConfigError, UfoError
from ufo_video.train import checkpoint as ckpt
from ufo_video.models.easyanimate import masks
from ufo_video.train import objective, state_io
from ufo_video.train.legacy_flags import translate


# ---- objective -------------------------------------------------------------------------------
def test_uniform_sigma_is_the_reference_discretisation():
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True)
    for seed in range(20):
        g, twin = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        u = torch.rand((), generator=twin).item()
        expected = sched.timesteps[int(u * 1000)] / 1000  # V5.1 scheduler, dynamic shifting on: unshifted
        assert objective.sample_sigma("uniform", g, grid=objective.unshifted_grid()).item() == pytest.approx(
            expected.item(), abs=0)
    grid = objective.unshifted_grid()
    assert grid[0] == 1000 and grid[-1] == 1 and len(grid) == 1000
    with pytest.raises(ValueError, match="model's grid"):
        objective.sample_sigma("uniform", torch.Generator())


def test_shift_and_logit_normal_by_hand():
    assert objective.shift_sigmas(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)
    assert objective.shift_sigmas(torch.tensor(0.25), 1.0).item() == pytest.approx(0.25)
    g, twin = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    z = torch.randn((), generator=twin).item()
    got = objective.sample_sigma("logit_normal", g, logit_mean=0.5, logit_std=2.0).item()
    assert got == pytest.approx(1 / (1 + math.exp(-(0.5 + 2.0 * z))), rel=1e-6)
    g, twin = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    s = objective.sample_sigma("uniform", twin, grid=objective.unshifted_grid()).item()
    assert objective.sample_sigma("shift", g, shift=2.0).item() == pytest.approx(2 * s / (1 + s), rel=1e-6)


def test_noising_target_timestep_and_loss_by_hand():
    x0 = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    eps = torch.tensor([[0.0, 1.0], [-1.0, 1.0]])
    sigma = torch.tensor([0.25, 1.0])
    xt = objective.add_noise(x0, eps, sigma)
    assert torch.allclose(xt, torch.tensor([[0.75, 1.75], [-1.0, 1.0]]))
    target = objective.flow_target(x0, eps)
    assert torch.equal(target, torch.tensor([[-1.0, -1.0], [-4.0, 2.0]]))
    assert torch.equal(objective.timesteps_for(sigma), torch.tensor([250.0, 1000.0]))
    pred = torch.tensor([[0.0, -1.0], [-4.0, 0.0]])
    # squared errors 1, 0, 0, 4 -> mean 1.25
    assert objective.flow_loss(pred, target).item() == pytest.approx(1.25)


def test_noise_batch_depends_only_on_each_slots_generator():
    lat = torch.zeros(2, 4, 2, 4, 4)
    grid = objective.unshifted_grid()
    a = objective.noise_batch(lat, [objective.sample_generator(1, 0, 5, s) for s in (0, 1)], "uniform", grid=grid)
    b = objective.noise_batch(lat[:1], [objective.sample_generator(1, 0, 5, 1)], "uniform", grid=grid)
    assert torch.equal(a.noisy[1], b.noisy[0]) and torch.equal(a.sigmas[1:], b.sigmas)
    assert not torch.equal(a.noisy[0], a.noisy[1])
    # x0 = 0: x_t = sigma * eps and target = eps
    assert torch.allclose(a.noisy, a.target * a.sigmas.view(-1, 1, 1, 1, 1))


# ---- masks -----------------------------------------------------------------------------------
def test_mask_shapes():
    g = torch.Generator().manual_seed(0)
    assert masks.make_mask("all", 5, 8, 8, g).min() == 1
    first = masks.make_mask("first", 5, 8, 8, g)
    assert first[:, 0].max() == 0 and first[:, 1:].min() == 1
    fl = masks.make_mask("first_last", 5, 8, 8, g)
    assert fl[:, 0].max() == 0 and fl[:, -1].max() == 0 and fl[:, 1:-1].min() == 1
    for _ in range(20):
        box = masks.make_mask("box", 5, 8, 8, g)
        assert box.sum() > 0 and all(torch.equal(box[:, 0], box[:, f]) for f in range(5))
        span = masks.make_mask("span", 5, 8, 8, g)
        frames = span[0, :, 0, 0].nonzero().flatten().tolist()
        assert frames == list(range(frames[0], frames[-1] + 1)) and span[0].amax(dim=(1, 2)).sum() == len(frames)


def test_mask_kind_frequencies_and_zeroing():
    g = torch.Generator().manual_seed(0)
    draws = [masks.sample_mask(5, 4, 4, g) for _ in range(3000)]
    kinds = [k for k, _, _ in draws]
    for kind, p in masks.MASK_KINDS:
        assert abs(kinds.count(kind) / len(kinds) - p) < 0.03, kind
    zeroed = [z for k, _, z in draws if k == "all"]
    assert abs(sum(zeroed) / len(zeroed) - 0.9) < 0.04
    assert not any(z for k, _, z in draws if k != "all")


class _FakeModel:
    """Records the inpaint_conditioning call; the conditioning is all ones."""

    def __init__(self):
        self.calls = []
        self.transformer = type("T", (), {"config": type("C", (), {"in_channels": 9})()})()

    def inpaint_conditioning(self, pixels, mask, noise=None):
        self.calls.append((pixels, mask))
        return torch.ones(pixels.shape[0], 5, 2, 1, 1)


def test_build_conditioning_uses_the_model_and_zeroes_t2v_samples():
    model = _FakeModel()
    pixels = torch.zeros(64, 3, 5, 4, 4)
    gens = [torch.Generator().manual_seed(i) for i in range(64)]
    cond, kinds = masks.build_conditioning(model, pixels, gens)
    (_, mask), = model.calls
    assert mask.shape == (64, 1, 5, 4, 4)
    replay = [masks.sample_mask(5, 4, 4, torch.Generator().manual_seed(i)) for i in range(64)]
    for i, (kind, m, zero) in enumerate(replay):
        assert kinds[i] == kind and torch.equal(mask[i], m)
        assert cond[i].abs().sum() == (0 if zero else cond[i].numel())
    assert "all" in kinds and any(kind != "all" for kind in kinds)
    zeros = masks.zero_conditioning(9, torch.ones(2, 4, 2, 3, 3))
    assert zeros.shape == (2, 5, 2, 3, 3) and zeros.abs().sum() == 0


# ---- state files and checkpoints ------------------------------------------------------------
def test_state_roundtrip_optimizer_and_rng(tmp_path):
    p = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.AdamW([p], lr=1e-3, betas=(0.9, 0.99))
    p.grad = torch.ones_like(p)
    opt.step()
    state_io.save_nested(opt.state_dict(), tmp_path, "optimizer")
    loaded = state_io.load_nested(tmp_path, "optimizer")
    assert loaded["param_groups"][0]["betas"] == (0.9, 0.99)
    assert torch.equal(loaded["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    opt2 = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone())], lr=1e-3)
    opt2.load_state_dict(loaded)
    state_io.save_nested(state_io.rng_state(), tmp_path, "rng")
    first = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    state_io.set_rng_state(state_io.load_nested(tmp_path, "rng"))
    again = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]


def _fake_checkpoint(out, step, complete=True):
    (out / f"checkpoint-{step}.safetensors").write_bytes(b"x")
    folder = out / f"checkpoint-{step}"
    folder.mkdir()
    if complete:
        (folder / ckpt.MARKER).write_text("ok")


def test_latest_ignores_incomplete_and_rotation_keeps_newest(tmp_path):
    for step in (100, 200, 300):
        _fake_checkpoint(tmp_path, step)
    _fake_checkpoint(tmp_path, 400, complete=False)  # killed before its marker
    (tmp_path / f"{ckpt.TMP_PREFIX}500").mkdir()  # killed while assembling
    assert ckpt.latest_state(tmp_path) == tmp_path / "checkpoint-300"
    assert ckpt.resolve_resume("latest", tmp_path) == tmp_path / "checkpoint-300"
    assert ckpt.resolve_resume(str(tmp_path / "checkpoint-200.safetensors"), tmp_path) == tmp_path / "checkpoint-200"
    with pytest.raises(UfoError, match="incomplete"):
        ckpt.resolve_resume(str(tmp_path / "checkpoint-400"), tmp_path)
    with pytest.raises(UfoError, match="save_state"):
        ckpt.resolve_resume(str(tmp_path / "checkpoint-999"), tmp_path)
    assert ckpt.remove_stale_tmp(tmp_path) == [tmp_path / f"{ckpt.TMP_PREFIX}500"]
    removed = ckpt.rotate(tmp_path, 2)
    assert sorted(p.name for p in removed) == ["checkpoint-100", "checkpoint-100.safetensors", "checkpoint-200",
                                               "checkpoint-200.safetensors"]  # fmt: skip
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "checkpoint-300" in left and "checkpoint-400.safetensors" in left
    assert ckpt.resolve_resume("latest", tmp_path / "empty") is None


# ---- legacy flags -----------------------------------------------------------------------------
# the reference's scripts/train_ufo.sh, flag for flag
REFERENCE_FLAGS = """--pretrained_model_name_or_path=models/Diffusion_Transformer/EasyAnimateV5.1-12b-zh-InP
--train_data_dir=datasets/internal_datasets/ --train_data_meta=datasets/internal_datasets/metadata.json
--config_path config/easyanimate_video_v5.1_magvit_qwen.yaml --image_sample_size=1024 --video_sample_size=256
--token_sample_size=512 --video_sample_stride=3 --video_sample_n_frames=49 --train_batch_size=1 --video_repeat=1
--gradient_accumulation_steps=1 --dataloader_num_workers=8 --num_train_epochs=100 --checkpointing_steps=100
--learning_rate=1e-04 --seed=42 --low_vram --output_dir=output_dir --gradient_checkpointing --mixed_precision=bf16
--adam_weight_decay=5e-2 --adam_epsilon=1e-10 --vae_mini_batch=1 --max_grad_norm=0.05 --random_hw_adapt
--training_with_video_token_length --loss_type=flow --enable_bucket --uniform_sampling --train_mode=inpaint""".split()


def test_legacy_flags_translate_the_reference_script():
    from ufo_video.config import load_config

    overrides, notices = translate(REFERENCE_FLAGS)
    assert len(notices) == 3  # --config_path, --video_repeat, --vae_mini_batch
    cfg = load_config(None, overrides)
    assert cfg.data.video_sample_stride == 3 and cfg.data.video_sample_n_frames == 49 and cfg.train.low_vram
    assert cfg.train.adam_epsilon == 1e-10 and cfg.train.mixed_precision == "bf16" and cfg.data.random_hw_adapt
    assert cfg.model.pretrained_model_name_or_path == "models/Diffusion_Transformer/EasyAnimateV5.1-12b-zh-InP"

    overrides, _ = translate(["--rank", "128", "--mixed_precision=no", "--resume_from_checkpoint=latest",
                              "--validation_prompts", "a cat", "a dog", "max_nan_skips=3"])  # fmt: skip
    assert 'train.validation_prompts=["a cat", "a dog"]' in overrides and "max_nan_skips=3" in overrides
    cfg = load_config(None, overrides)
    assert cfg.lora.rank == 128 and cfg.train.validation_prompts == ["a cat", "a dog"]
    assert cfg.train.mixed_precision == "no" and cfg.train.max_nan_skips == 3
    assert cfg.train.resume_from_checkpoint == "latest"
    with pytest.raises(ConfigError, match="--rank"):
        translate(["--rnak=4"])
    with pytest.raises(ConfigError, match="flow"):
        translate(["--loss_type=ddpm"])


def test_deepspeed_accelerate_config_is_valid_yaml():
    import yaml
    from pathlib import Path

    data = yaml.safe_load((Path(__file__).parent.parent / "configs/accelerate/deepspeed_zero2.yaml").read_text())
    assert data["distributed_type"] == "DEEPSPEED" and data["deepspeed_config"]["zero_stage"] == 2
    assert data["deepspeed_config"]["gradient_accumulation_steps"] == 1


def test_clip_norm_warmup_schedule_by_hand() -> None:
    from ufo_video.train.objective import clip_norm_at

    assert clip_norm_at(0, 0.05, 1000, 5.0) == pytest.approx(0.25)
    assert clip_norm_at(500, 0.05, 1000, 5.0) == pytest.approx(0.15)
    assert clip_norm_at(1000, 0.05, 1000, 5.0) == 0.05
    assert clip_norm_at(5000, 0.05, 1000, 5.0) == 0.05
    assert clip_norm_at(0, 0.05, 0, 5.0) == 0.05


def test_posterior_sample_is_mean_plus_std_times_the_samples_own_noise():
    """train.vae_latents = "sample": each clip's latents are mean + std * eps, eps drawn first from
    that sample's generator (hand-computed here), so the cached path (mean, std stored) and the
    encoding path draw the same latents."""
    mean = torch.tensor([[[1.0, 2.0]], [[-1.0, 0.0]]])  # [B=2, 1, 2]
    std = torch.tensor([[[0.5, 0.0]], [[2.0, 1.0]]])
    gens = [torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)]
    eps = [torch.randn((1, 2), generator=torch.Generator().manual_seed(s)) for s in (3, 4)]
    out = objective.sample_posterior(mean, std, gens)
    assert torch.equal(out[0], mean[0] + std[0] * eps[0]) and torch.equal(out[1], mean[1] + std[1] * eps[1])
    assert out[0, 0, 1] == 2.0  # std 0 keeps the mean


def test_vae_posterior_mean_is_encode_video_and_mode_setting_is_deterministic(tiny_model):
    from ufo_video.models.registry import load_model

    model = load_model(tiny_model, components=("vae",))
    pixels = torch.rand(2, 3, 5, 32, 32) * 2 - 1
    with torch.no_grad():
        mean, std = model.encode_video_posterior(pixels)
        assert torch.equal(mean, model.encode_video(pixels)) and (std > 0).all()


def test_start_image_noise_is_the_references_and_touches_only_given_pixels(tiny_model):
    """train.start_image_noise: sigma = exp(N(-3, 0.5)) per sample (hand-computed from the same
    generator), added to the kept pixels only (never to the -1 of masked ones), before encoding,
    as the inpaint pipeline's `add_noise_to_reference_video` does."""
    from ufo_video.models.registry import load_model

    g = torch.Generator().manual_seed(5)
    noise = masks.draw_start_image_noise((3, 2, 4, 4), g)
    h = torch.Generator().manual_seed(5)
    sigma = torch.exp(torch.randn((), generator=h) * 0.5 - 3.0)
    assert torch.equal(noise, torch.randn((3, 2, 4, 4), generator=h) * sigma)

    model = load_model(tiny_model, components=("vae",))
    assert model.start_image_noise_applies("inpaint") and not model.start_image_noise_applies("normal")
    pixels = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    mask = masks.make_mask("first", 5, 32, 32, torch.Generator())[None]
    bump = torch.full_like(pixels, 0.05)
    with torch.no_grad():
        noisy = model.inpaint_conditioning(pixels, mask, bump)
        kept = pixels * (mask < 0.5) + (-1.0) * (mask >= 0.5)
        by_hand = model.encode_video(torch.where(kept == -1, kept, kept + 0.05))
        assert torch.allclose(noisy[:, 1:], by_hand, atol=1e-6)  # channel 0 is the mask
        assert not torch.allclose(noisy, model.inpaint_conditioning(pixels, mask))
