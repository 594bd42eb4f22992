"""Multi-process engines: DeepSpeed ZeRO-2 configured for this trainer (micro-batch, clipping) or
refused by name, its state saved and restored through accelerate (exact resume, 2 CPU processes),
validation split across ranks, DDP's find_unused_parameters decided from a real backward."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from test_train_helpers import losses, lora, make_dataset, max_diff, write_config
from ufo_video.config import build_config
from ufo_video.errors import ConfigError
from ufo_video.train.setup import configure_deepspeed
from ufo_video.train.validation import my_jobs

BIN = Path(sys.executable).parent
DS_YAML = """compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config:
  zero_stage: 2
  offload_optimizer_device: none
  offload_param_device: none
  gradient_accumulation_steps: 1
  gradient_clipping: {clip}
  zero3_init_flag: false
mixed_precision: 'no'
machine_rank: 0
num_machines: 1
num_processes: 2
main_training_function: main
rdzv_backend: static
same_network: true
use_cpu: false
"""


def _fake_accelerator(ds: dict, processes: int = 2):
    return SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=ds)),
                           num_processes=processes)


def test_deepspeed_config_gets_the_micro_batch_and_clip() -> None:
    cfg = build_config({"train": {"train_batch_size": 3, "max_grad_norm": 0.05}})
    ds = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": 1, "gradient_clipping": "auto",
          "zero_optimization": {"stage": 2}}
    configure_deepspeed(cfg, _fake_accelerator(ds, processes=4))
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["train_batch_size"] == 12
    assert ds["gradient_clipping"] == 0.05


@pytest.mark.parametrize(("train", "ds_extra", "named"), [
    ({"max_grad_norm_warmup_steps": 1000}, {}, "train.max_grad_norm_warmup_steps"),
    ({"nan_policy": "skip"}, {}, "train.nan_policy=skip"),
    ({"gradient_accumulation_steps": 2}, {}, "train.gradient_accumulation_steps"),
    ({}, {"gradient_clipping": 1.0}, "gradient_clipping=1.0 in the DeepSpeed config"),
    ({}, {"zero_optimization": {"stage": 3}}, "zero_optimization.stage=3"),
])
def test_deepspeed_refuses_what_it_cannot_honour(train, ds_extra, named) -> None:
    cfg = build_config({"train": train})
    ds = {"gradient_accumulation_steps": 1, "zero_optimization": {"stage": 2}, **ds_extra}
    with pytest.raises(ConfigError, match=named.replace(".", r"\.").replace("=", "=").replace("(", r"\(")):
        configure_deepspeed(cfg, _fake_accelerator(ds))


def test_validation_pairs_are_dealt_across_ranks() -> None:
    all_pairs = my_jobs(3, [1.0, 0.15], 0, 1)
    split = [my_jobs(3, [1.0, 0.15], r, 2) for r in range(2)]
    assert sorted(split[0] + split[1]) == sorted(all_pairs) and len(all_pairs) == 6
    assert [len(s) for s in split] == [3, 3] and all(keep for _, _, keep in all_pairs)
    assert my_jobs(1, [1.0], 1, 2) == []  # a rank with nothing to render goes straight to the barrier


def test_sharded_validation_renders_the_same_number_of_clips_on_every_rank() -> None:
    # FSDP: every forward is a collective, so a rank short of jobs renders a discarded repeat
    split = [my_jobs(3, [1.0], r, 2, equal=True) for r in range(2)]
    assert split == [[(0, 1.0, True), (2, 1.0, True)], [(1, 1.0, True), (0, 1.0, False)]]
    assert my_jobs(1, [1.0], 1, 2, equal=True) == [(0, 1.0, False)]
    assert [len(my_jobs(5, [1.0, 0.1], r, 4, equal=True)) for r in range(4)] == [3, 3, 3, 3]


def _launch(yaml_path: Path, cfg: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    return subprocess.run([str(BIN / "accelerate"), "launch", "--config_file", str(yaml_path), "-m", "ufo_video",
                           "train", str(cfg), *overrides], env=env, capture_output=True, text=True, timeout=400)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                    reason="deepspeed not installed: scripts/setup_env.sh (CI) installs it; a bare "
                    "pip install -e '.[test]' does not (add ',deepspeed')")
def test_deepspeed_zero2_two_processes_resume_exactly(tiny_model, tmp_path) -> None:
    """ZeRO-2 on 2 CPU processes (gloo): each rank's optimizer shard is saved; a resume from
    step 2 continues to the same losses and bitwise the same LoRA as the straight run; the two
    validation prompts are rendered one per rank."""
    data = make_dataset(tmp_path / "ds")
    yaml_path = tmp_path / "ds.yaml"
    yaml_path.write_text(DS_YAML.format(clip=0.05))
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", tiny_model, data, out, max_train_steps=4, checkpointing_steps=2,
                       train_batch_size=1, save_dtype="fp32", validation_steps=4, validation_prompts=["a", "b"],
                       validation_weights=[1.0])  # fmt: skip
    run = _launch(yaml_path, cfg, "infer.num_inference_steps=1")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    engine = out / "checkpoint-2" / "engine" / "pytorch_model"
    shards = sorted(p.name for p in engine.iterdir() if "optim_states" in p.name)
    assert shards == ["zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-000004-prompt0-w1.mp4",
                                                                   "step-000004-prompt1-w1.mp4"]
    straight, straight_losses = lora(out / "checkpoint-4.safetensors"), losses(out)
    shutil.rmtree(out / "checkpoint-4")
    (out / "checkpoint-4.safetensors").unlink()
    again = _launch(yaml_path, cfg, "infer.num_inference_steps=1", "resume_from_checkpoint=latest")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stdout
    assert losses(out) == straight_losses
    assert max_diff(straight, lora(out / "checkpoint-4.safetensors")) == 0.0


def test_an_fsdp_launch_on_one_process_is_refused_with_the_reason(tiny_model, tmp_path, monkeypatch, capsys) -> None:
    from ufo_video.cli import main

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    data = make_dataset(tmp_path / "ds", images=1, videos=0)
    out = tmp_path / "out"
    assert main(["train", str(write_config(tmp_path / "c.toml", tiny_model, data, out, train_batch_size=1))]) == 2
    err = capsys.readouterr().err
    assert "distributed_type: FSDP" in err and "at least 2" in err and not out.exists()


# accelerate 1.15 turns `distributed_type: FSDP` on only for accelerator devices (state.py: the
# FSDP branch lists MULTI_GPU/NPU/..., not MULTI_CPU). torch's FSDP2 itself runs on CPU with gloo,
# so the test makes accelerate take the decision it takes on GPUs, and nothing else: after
# AcceleratorState's own init the distributed type is set to FSDP with the launch's plugin. The
# trainer, accelerate's FSDP2 preparation and torch's sharding then run unchanged.
FSDP_ON_CPU = """
import accelerate.state as st
from accelerate.utils import DistributedType
_init = st.AcceleratorState.__init__
def _init_fsdp_on_cpu(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    plugin = kwargs.get("fsdp_plugin")
    if plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        st.PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = plugin
st.AcceleratorState.__init__ = _init_fsdp_on_cpu
"""


def _fsdp_launch(tmp_path: Path, cfg: Path, *overrides: str, precision: str = "'no'") -> subprocess.CompletedProcess:
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(FSDP_ON_CPU)
    text = (Path(__file__).parents[1] / "configs/accelerate/fsdp2.yaml").read_text()
    yaml_path = tmp_path / "fsdp2.yaml"
    yaml_path.write_text(text.replace("mixed_precision: bf16", f"mixed_precision: {precision}").replace(
        "use_cpu: false", "use_cpu: true"))
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")])))
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    return subprocess.run([str(BIN / "accelerate"), "launch", "--config_file", str(yaml_path), "-m", "ufo_video",
                           "train", str(cfg), *overrides], env=env, capture_output=True, text=True, timeout=400)


def _root_error(stderr: str) -> str:
    """The first traceback of a failed launch (torchrun's summary alone names no cause)."""
    lines = [line for line in stderr.splitlines() if "[rank0]" in line or "Error" in line]
    return "\n".join(lines[-60:]) or stderr[-3000:]


@pytest.mark.parametrize(("settings", "plugin", "named"), [
    ({"train": {"fp8_base": True}}, {}, "train.fp8_base=true"),
    ({"model": {"weight_dtype": "bf16"}, "train": {"mixed_precision": "no"}}, {}, "train.mixed_precision=bf16"),
    ({}, {"fsdp_version": 1}, "fsdp_version: 2"),
    ({}, {"processes": 1}, "--num_processes"),
])
def test_fsdp_refuses_what_it_cannot_honour(settings, plugin, named) -> None:
    from ufo_video.train.fsdp import configure_fsdp

    cfg = build_config(settings)
    acc = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=plugin.get("fsdp_version", 2))),
                          num_processes=plugin.get("processes", 2), is_main_process=False)
    with pytest.raises(ConfigError, match=re.escape(named)):
        configure_fsdp(cfg, acc)


def test_fsdp2_two_processes_equal_one_process_and_resume_exactly(tiny_model, tmp_path, capsys) -> None:
    """The shipped FSDP2 config on 2 CPU processes (gloo): base weights sharded per transformer
    block; the LoRA file equals a 1-process run with the same global batch (up to the reduction's
    summation order); a resume from step 2 gives bitwise the same LoRA and losses as the straight
    run; 3 validation clips over 2 ranks render without a hang."""
    from ufo_video.cli import main

    data = make_dataset(tmp_path / "ds")
    one = tmp_path / "one"
    assert main(["train", str(write_config(tmp_path / "a.toml", tiny_model, data, one, train_batch_size=2,
                                           save_dtype="fp32"))]) == 0
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "b.toml", tiny_model, data, out, train_batch_size=1, save_dtype="fp32",
                       validation_steps=4, validation_prompts=["a", "b", "c"], validation_weights=[1.0])
    run = _fsdp_launch(tmp_path, cfg, "infer.num_inference_steps=1")
    assert run.returncode == 0, run.stdout[-2000:] + _root_error(run.stderr)
    assert "FSDP2 on 2 processes" in run.stdout
    held = re.search(r"this process holds ([\d,]+) of the transformer's ([\d,]+)", run.stdout)
    assert held and int(held[1].replace(",", "")) < 0.6 * int(held[2].replace(",", ""))  # sharded, not replicated
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        f"step-000004-prompt{i}-w1.mp4" for i in range(3)]
    for (_, a), (_, b) in zip(losses(one), losses(out)):
        assert abs(a - b) <= 1e-5
    straight, straight_losses = lora(out / "checkpoint-4.safetensors"), losses(out)
    assert max_diff(lora(one / "checkpoint-4.safetensors"), straight) <= 5e-5  # as the DDP test
    state = out / "checkpoint-2"
    assert (state / "fsdp-optimizer.json").is_file() and not (state / "optimizer.json").exists()
    shutil.rmtree(out / "checkpoint-4")
    (out / "checkpoint-4.safetensors").unlink()
    again = _fsdp_launch(tmp_path, cfg, "infer.num_inference_steps=1", "resume_from_checkpoint=latest",
                         "validation_steps=100")
    assert again.returncode == 0, again.stdout[-2000:] + _root_error(again.stderr)
    assert "resumed from" in again.stdout
    assert losses(out) == straight_losses
    assert max_diff(straight, lora(out / "checkpoint-4.safetensors")) == 0.0
    # an FSDP state resumed without FSDP is refused by name, nothing written
    capsys.readouterr()
    assert main(["train", str(cfg), "resume_from_checkpoint=latest", "max_train_steps=6"]) != 0
    assert "saved with FSDP, resumed with DDP / one process" in capsys.readouterr().err
    assert not (out / "checkpoint-6.safetensors").exists()


@pytest.mark.parametrize(("targets", "unused"), [("all-linear", True), (["to_q", "to_k", "to_v"], False)])
def test_unused_lora_found_by_one_real_backward_rng_untouched(tiny_model, tmp_path, targets, unused) -> None:
    import torch
    from accelerate.state import AcceleratorState

    from ufo_video.config import load_config
    from ufo_video.data.loader import build_train_loader
    from ufo_video.train.setup import make_accelerator, setup, unused_trainable

    data = make_dataset(tmp_path / "ds", images=2, videos=0)
    cfg = load_config(write_config(tmp_path / "c.toml", tiny_model, data, tmp_path / "out", train_batch_size=1))
    cfg.lora.target_modules = targets
    acc = make_accelerator(cfg, tmp_path / "out")
    try:
        run = setup(cfg, acc, batches_per_epoch=2)
        batch = next(iter(build_train_loader(cfg, seed=0, epoch=0)))
        before = torch.get_rng_state()
        names = unused_trainable(run, batch)
        assert torch.equal(torch.get_rng_state(), before)
        assert all(p.grad is None for p in run.params)
        assert bool(names) == unused
        if unused:  # EasyAnimate's last block: its text stream feeds nothing
            assert all(n.startswith("transformer_blocks.1.") for n in names), names
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_fsdp2_with_the_shipped_bf16_precision(tiny_model, tmp_path) -> None:
    """The shipped config's precision: bf16 base weights next to fp32 LoRA weights in one shard
    group, under FSDP2's bf16 mixed-precision policy. The losses follow a 1-process bf16 run with
    the same global batch (bf16 compute and reduction: a loose bound) and the LoRA file is finite."""
    from ufo_video.cli import main

    data = make_dataset(tmp_path / "ds")
    bf16 = {"mixed_precision": "bf16", "max_train_steps": 2, "checkpointing_steps": 2, "save_state": False}
    one, out = tmp_path / "one", tmp_path / "out"
    a = write_config(tmp_path / "a.toml", tiny_model, data, one, train_batch_size=2, **bf16)
    b = write_config(tmp_path / "b.toml", tiny_model, data, out, train_batch_size=1, **bf16)
    for path in (a, b):
        path.write_text(path.read_text().replace('weight_dtype = "fp32"', 'weight_dtype = "bf16"'))
    assert main(["train", str(a)]) == 0
    run = _fsdp_launch(tmp_path, b, precision="bf16")
    assert run.returncode == 0, run.stdout[-2000:] + _root_error(run.stderr)
    assert "weights bf16, mixed precision bf16, LoRA in fp32" in run.stdout
    for (_, x), (_, y) in zip(losses(one), losses(out)):
        assert abs(x - y) <= 2e-2 * abs(x)
    weights = lora(out / "checkpoint-2.safetensors")
    assert all(bool(v.float().isfinite().all()) for v in weights.values())
