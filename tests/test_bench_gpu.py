"""`ufo-video bench --suite gpu`: the whole suite at `--preset tiny` through the CLI in a fresh
process (structure and sanity of gpu.json / gpu.md, and that it never imports PyAV or pydantic,
which the lent GPU machine lacks), plus the maths (FLOP counts, MFU, target judging), the time
budget, OOM handling and the "largest size that fits" fallback, against hand-computed values.
No assertion on absolute times (the machine is shared)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ufo_video
from ufo_video.bench import gpu_flops, gpu_models, gpu_train
from ufo_video.bench.gpu_plan import PRESETS, Budget, Entry, TrainItem, load_entries, unavailable_reason
from ufo_video.bench.gpu_report import GpuCase, judge
from ufo_video.bench.gpu_suite import Runner, planned_cases
from ufo_video.errors import UfoError

SRC = Path(ufo_video.__file__).resolve().parents[1]
TINY = PRESETS["tiny"]
HEADER_KEYS = {"suite", "preset", "command", "started_utc", "seconds", "budget_s", "device", "host_cpu", "versions",
               "calibration_n", "peak_tflops", "flop_formula", "nominal_formula", "entries", "cases"}  # fmt: skip
CASE_KEYS = {"id", "entry", "kind", "status", "reason", "seconds", "metrics", "targets"}

RUN_SCRIPT = """
import sys
from ufo_video.cli import main
rc = main(sys.argv[1:])
leaked = sorted(m for m in ("av", "pydantic") if m in sys.modules)
print("LEAKED=" + ",".join(leaked))
sys.exit(rc)
"""


def _run_cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    return subprocess.run([sys.executable, "-c", RUN_SCRIPT, *args], capture_output=True, text=True, env=env,
                          timeout=600)


def _adapters():
    from ufo_video.models.registry import ADAPTERS

    return ADAPTERS


def _ea_entry() -> Entry:
    adapters = _adapters()
    return next(e for e in load_entries(TINY) if unavailable_reason(e, adapters) is None and e.infer is not None)


def test_tiny_suite_end_to_end_through_the_cli(tmp_path):
    out = tmp_path / "gpu"
    proc = _run_cli(["bench", "--suite", "gpu", "--preset", "tiny", "--out", str(out), "--threads", "1"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LEAKED=\n" in proc.stdout, "the gpu suite imported PyAV or pydantic: " + proc.stdout[-300:]
    data = json.loads((out / "gpu.json").read_text())
    md = (out / "gpu.md").read_text()
    assert HEADER_KEYS <= set(data) and data["suite"] == "gpu" and data["preset"] == "tiny"
    assert data["device"]["type"] == "cpu" and data["peak_tflops"] > 0 and "torch" in data["versions"]
    assert data["command"] == f"ufo-video bench --suite gpu --out {out} --preset tiny --threads 1"

    adapters = _adapters()
    entries = load_entries(TINY)
    assert [c["id"] for c in data["cases"]] == [cid for e in entries for cid, _ in planned_cases(e)]
    by_id = {c["id"]: c for c in data["cases"]}
    ran = 0
    for entry in entries:
        reason = unavailable_reason(entry, adapters)
        for cid, kind in planned_cases(entry):
            case = by_id[cid]
            assert set(case) == CASE_KEYS and case["kind"] == kind and cid in md and cid in proc.stdout
            if reason is not None:  # e.g. a family not registered yet
                assert case["status"] == "skipped" and case["reason"] == reason
                assert f"skipped: {reason}" in md
                continue
            assert case["status"] == "ok", (cid, case["reason"])
            ran += 1
            m = case["metrics"]
            if kind.startswith("build"):
                assert m["params"] > 0 and m["lora_params"] > 0 and m["lora_rank"] == entry.lora_rank
            elif kind.startswith("train"):
                _check_train(m, data)
            elif kind == "memory":
                assert m["s_per_step"] > 0 and m["loss_finite"] and m["ratio_to_fastest"] >= 1.0
                assert m["estimate_gb"] > 0 and 0 < m["blocks_to_swap"] <= m["blocks"] or m["blocks_to_swap"] == 0
            elif kind == "infer-swap":
                assert m["s_per_step"] > 0 and 0 < m["blocks_to_swap"] <= m["blocks"]
            else:
                _check_infer(m, TINY.infer_steps)
    assert ran >= 7  # at least the first entry's build, 2 sizes, inference and fp8 build + 2 sizes

    targets = [(c["id"], t) for c in data["cases"] for t in c["targets"]]
    if any(e.targets for e in entries if unavailable_reason(e, adapters) is None):
        assert targets and "## Targets (issue 16)" in md
    for cid, t in targets:
        assert t["met"] is None and t["why"] == "not judged: tiny preset" and cid in md
    assert data["flop_formula"] in md and "MFU" in md

    again = _run_cli(["bench", "--suite", "gpu", "--preset", "tiny", "--out", str(out)])
    assert again.returncode == 2 and "already holds gpu.json, gpu.md" in again.stderr


def _check_train(m: dict, data: dict) -> None:
    assert m["timed_steps"] >= 1 and len(m["step_seconds"]) == m["timed_steps"] and m["s_per_step"] > 0
    assert m["peak_gb"] == "n/a on cpu" and m["loss_finite"] is True and m["did_not_fit"] == []
    f, h, w = (int(v) for v in m["size"].split("x"))
    assert m["video_tokens"] > 0 and m["text_tokens"] > 0
    kinds = m["forward_flop_by_kind"]
    assert kinds["linear"] > 0 and kinds["attention"] > 0
    assert m["flop_per_step"] == pytest.approx(3 * sum(kinds.values()))
    assert m["mfu"] == pytest.approx(m["flop_per_step"] / (m["s_per_step"] * data["peak_tflops"] * 1e12))
    assert m["nominal_mfu"] / m["mfu"] == pytest.approx(m["nominal_flop_per_step"] / m["flop_per_step"])


def _check_infer(m: dict, steps: int) -> None:
    for key in ("unfused_ratio", "fused_ratio", "weight_change_ratio", "base_step_s", "uncached_s_per_step",
                "model_load_lower_bound_s"):
        assert isinstance(m[key], float) and m[key] > 0, key
    assert m["guidance_batch"] == 2
    if m["skipped_parts"]:  # a family whose blocks the step cache cannot take (LTX-2) says so, nothing else
        assert len(m["skipped_parts"]) == 1 and m["skipped_parts"][0].startswith("step_cache: not available (")
        assert "cached_s_per_step" not in m and "cache_all_skipped" not in m
        return
    for key in ("cached_s_per_step", "cache_all_skipped_s_per_step"):
        assert isinstance(m[key], float) and m[key] > 0, key
    assert m["cache_calls"] == steps and 0 <= m["cache_skipped"] < steps
    # an infinite threshold skips every step after the first: the cache is really in the loop
    assert m["cache_all_skipped"] == f"{steps - 1} of {steps}"


def test_any_registered_family_runs_from_the_table_alone(tmp_path):
    """What makes the Wan entries run once that family is registered: nothing in the bench code
    knows a family; a table entry naming a registry key (here an alias of the one family we
    have) and a configs folder is enough, and an unknown key is reported, not fatal."""
    from ufo_video.bench.gpu_suite import run_gpu_suite

    ea = _ea_entry()
    raw = json.loads((SRC / "ufo_video" / "assets" / "gpu-bench-models.json").read_text())
    base = next(r for r in raw["entries"] if r["name"] == ea.name)
    tiny = {**base["tiny"], "train": [{"sizes": [[5, 32, 32], [5, 16, 16]]}]}
    other = {**base, "name": "alias", "family": "alias", "configs": str(ea.configs), "fp8": False, "tiny": tiny}
    other.pop("infer")
    other.pop("memory", None)
    tiny.pop("memory_sizes", None)
    missing = {**other, "name": "later", "family": "not-yet"}
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"entries": [other, missing]}))
    cases, header = run_gpu_suite(tmp_path / "out", "tiny", adapters={"alias": _adapters()[ea.family]},
                                  table=table, progress=lambda m: None)
    got = {c.id: (c.status, c.reason) for c in cases}
    assert got == {
        "alias/build-bf16": ("ok", None), "alias/train-bf16/5x32x32": ("ok", None),
        "later/build-bf16": ("skipped", "family not available ('not-yet' is not in models.registry.ADAPTERS)"),
        "later/train-bf16/5x32x32": ("skipped", "family not available ('not-yet' is not in models.registry.ADAPTERS)"),
    }  # fmt: skip
    assert cases[1].metrics["size"] == "5x32x32" and header["entries"] == ["alias", "later"]


def test_cli_refuses_bad_gpu_options(tmp_path, capsys):
    from ufo_video.cli import main

    assert main(["bench", "--suite", "gpu"]) == 2
    assert "--suite gpu needs --out DIR" in capsys.readouterr().err
    assert main(["bench", "--suite", "gpu", "--out", str(tmp_path / "a"), "--smoke"]) == 2
    assert "--smoke belong(s) to the cpu suite" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "--suite", "gpu", "--out", str(tmp_path / "b")]) == 2
        assert "--preset real builds 12-14B models and needs a CUDA device" in capsys.readouterr().err
    assert main(["bench", "--suite", "gpu", "--preset", "tiny", "--models", "nosuch", "--out", str(tmp_path / "c")]) == 2
    assert "--models: unknown nosuch" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()  # refused before anything was created


def test_exhausted_budget_skips_every_case_with_the_reason(tmp_path, capsys):
    from ufo_video.cli import main

    out = tmp_path / "late"
    assert main(["bench", "--suite", "gpu", "--preset", "tiny", "--models", _ea_entry().name, "--budget", "1e-9",
                 "--out", str(out)]) == 0
    data = json.loads((out / "gpu.json").read_text())
    assert data["budget_s"] == 1e-9 and data["cases"]
    for case in data["cases"]:
        assert case["status"] == "skipped" and case["reason"].startswith("time budget exhausted"), case
    assert "skipped: time budget exhausted" in capsys.readouterr().out
    assert main(["bench", "--suite", "gpu", "--preset", "tiny", "--budget", "0", "--out", str(tmp_path / "z")]) == 2


def test_flop_counter_matches_hand_computed_counts():
    lin = torch.nn.Linear(8, 4)
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 6)
    a, b = torch.randn(4, 5), torch.randn(5, 6)

    def forward():
        lin(torch.randn(3, 5, 8))
        F.scaled_dot_product_attention(q, k, v)
        torch.matmul(a, b)

    counter = gpu_flops.count_forward(forward)
    assert counter.by_kind == {"linear": 2 * 15 * 8 * 4, "attention": 2 * 6 * 5 * 7 * (8 + 6), "matmul": 2 * 4 * 5 * 6}
    assert counter.total == 960 + 5880 + 240
    assert gpu_flops.mfu(3e14, 1.0, 7.5e14) == pytest.approx(0.4)


def test_targets_are_judged_only_on_numbers_at_the_real_preset():
    targets = {"train-bf16/49x256x256": {"s_per_step": ("<=", 0.8), "mfu": (">=", 0.4), "peak_gb": ("<=", 40.0)}}
    case = GpuCase("m/train-bf16/49x256x256", "m", "train-bf16",
                   metrics={"s_per_step": 0.9, "mfu": 0.4, "peak_gb": "n/a on cpu"})
    judge(case, targets, judged=True)
    got = {t["metric"]: (t["met"], t["measured"]) for t in case.targets}
    assert got == {"s_per_step": (False, 0.9), "mfu": (True, 0.4), "peak_gb": (None, "n/a on cpu")}
    tiny = GpuCase("m/train-bf16/49x256x256", "m", "train-bf16", metrics={"s_per_step": 0.1})
    judge(tiny, targets, judged=False)
    assert all(t["met"] is None and t["why"] == "not judged: tiny preset" for t in tiny.targets)
    oom = GpuCase("m/train-bf16/49x256x256", "m", "train-bf16", status="oom", reason="out of memory")
    judge(oom, targets, judged=True)
    assert all(t["met"] is None and t["why"] == "not measured (oom)" for t in oom.targets)


def test_table_entries_targets_follow_the_preset_sizes():
    real = {e.name: e for e in load_entries(PRESETS["real"])}
    tiny = {e.name: e for e in load_entries(TINY)}
    assert set(real) == set(tiny)
    for name, r in real.items():
        t = tiny[name]
        assert len(r.train) == len(t.train) or not r.targets
        real_ids = {cid.split("/", 1)[1] for cid, _ in planned_cases(r)}
        tiny_ids = {cid.split("/", 1)[1] for cid, _ in planned_cases(t)}
        assert set(r.targets) <= real_ids and set(t.targets) <= tiny_ids  # every target lands on a case
    ea = next(e for e in real.values() if e.infer is not None)
    assert ea.lora_rank == 128 and ea.lora_alpha == 64 and ea.lora_targets == "all-linear"
    assert [i.sizes[0] for i in ea.train] == [(49, 256, 256), (49, 512, 512)] and ea.infer.size == (25, 384, 672)
    assert ea.targets["train-bf16/49x256x256"]["s_per_step"] == ("<=", 0.8)
    big = [e for e in real.values() if e.lora_rank == 32 and e.family == "wan"]
    assert big and all(e.train[0].sizes[0] == (81, 480, 832) for e in big if e.train)
    # issue 22's memory cases: Wan 14B at 81x512x512 and 81x480x832, swap 0 / 20 / 32 / 40, fp8 and scaled fp8
    wan14 = real["wan2.1-t2v-14b"]
    assert [m.size for m in wan14.memory] == [(81, 512, 512), (81, 480, 832)]
    labels = {c.label for m in wan14.memory for c in m.configs}
    assert {"fp8/swap0", "fp8/swap20", "fp8/swap32", "fp8/swap40", "fp8_scaled/swap32+offload"} <= labels
    assert wan14.infer_swap.size == (81, 480, 832)
    assert real["wan2.2-t2v-a14b-expert"].targets["memory/81x480x832/fp8_scaled/swap40+offload"]["peak_gb"] == ("<=", 16)
    with pytest.raises(UfoError, match="--models: unknown"):
        load_entries(TINY, ["nosuch"])


def test_bench_gpu_code_never_names_a_family():
    pattern = re.compile(r"easyanimate|magvit|qwen2vl|wan|umt5", re.IGNORECASE)  # as the team's grep: substrings
    for path in sorted((SRC / "ufo_video" / "bench").glob("gpu*.py")):
        hits = [line for line in path.read_text().splitlines() if pattern.search(line)]
        assert not hits, (path.name, hits)


def test_unavailable_family_or_configs_are_reasons(tmp_path):
    entry = _ea_entry()
    assert unavailable_reason(entry, {}) == f"family not available ('{entry.family}' is not in models.registry.ADAPTERS)"
    moved = Entry(**{**entry.__dict__, "configs": tmp_path / "none"})
    assert unavailable_reason(moved, _adapters()).startswith("configs not shipped")


def test_budget_and_guarded_cases_record_skips_ooms_and_errors():
    now = [0.0]
    budget = Budget(10.0, clock=lambda: now[0])
    runner = Runner(TINY, torch.device("cpu"), budget, progress=lambda m: None)
    entry = _ea_entry()
    assert budget.case_deadline(4.0) == 4.0
    now[0] = 8.0
    assert budget.case_deadline(4.0) == 10.0 and not budget.exhausted()

    def oom():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def bug():
        raise ValueError("broken")

    assert runner.guarded(entry, "x/oom", "train-bf16", oom).status == "oom"
    err = runner.guarded(entry, "x/err", "train-bf16", bug)
    assert err.status == "error" and err.reason == "ValueError: broken" and "Traceback" in err.metrics["traceback"]
    assert runner.guarded(entry, "x/ok", "infer", lambda: {"a": 1.0}).metrics == {"a": 1.0}
    now[0] = 10.5
    skipped = runner.guarded(entry, "x/late", "infer", lambda: pytest.fail("must not run"))
    assert skipped.status == "skipped" and skipped.reason.startswith("time budget exhausted (10 s of the suite's 10 s")
    assert [c.status for c in runner.cases] == ["oom", "error", "ok", "skipped"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    entry = _ea_entry()
    folder = gpu_models.config_folder(entry, tmp_path_factory.mktemp("cfg"))
    model = gpu_models.build(entry, _adapters()[entry.family], folder, torch.device("cpu"), torch.bfloat16)
    return entry, folder, model


def test_materialise_allocates_everything_in_bf16_with_the_stated_init(tiny_model):
    entry, folder, model = tiny_model
    t = model.transformer
    assert not any(p.is_meta for p in t.parameters()) and {p.dtype for p in t.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in t.parameters())
    mats = torch.cat([p.float().flatten() for p in t.parameters() if p.ndim >= 2])
    assert abs(mats.std().item() - gpu_models.INIT_STD) < 0.002
    for name, p in t.named_parameters():
        if p.ndim == 1:
            assert torch.all(p == (0.0 if name.endswith("bias") else 1.0)), name


    class Toy(torch.nn.Module):
        _keep_in_fp32_modules = ["norm"]

        def __init__(self):
            super().__init__()
            self.proj, self.norm = torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)
            self.register_buffer("freqs", torch.arange(3.0))

    with torch.device("meta"):
        toy = Toy()
    toy.register_buffer("freqs", torch.arange(3.0))  # build_meta keeps real buffers
    gpu_models.materialise(toy, torch.device("cpu"), torch.bfloat16)
    assert toy.proj.weight.dtype == torch.bfloat16 and toy.norm.weight.dtype == torch.float32
    assert torch.equal(toy.freqs, torch.arange(3.0))


def test_training_case_trains_the_lora_and_falls_back_to_a_size_that_fits(tiny_model, monkeypatch):
    entry, folder, _ = tiny_model
    cls = _adapters()[entry.family]
    model = gpu_models.build(entry, cls, folder, torch.device("cpu"), torch.bfloat16)
    params = gpu_models.add_lora(model, "bench", entry.lora_rank, entry.lora_alpha)
    assert params and all(p.dtype == torch.float32 and p.requires_grad for p in params)
    base_before = {n: p.clone() for n, p in model.transformer.named_parameters() if not p.requires_grad}
    original = gpu_train.make_step

    def oom_on_big(model_, params_, optimizer, size, *args):
        if size[1] > 32:
            raise torch.cuda.OutOfMemoryError("simulated")
        return original(model_, params_, optimizer, size, *args)

    monkeypatch.setattr(gpu_train, "make_step", oom_on_big)
    item = TrainItem(((5, 64, 64), (5, 48, 48), (5, 32, 32)))
    m = gpu_train.run_train_case(model, params, item, TINY, torch.device("cpu"), torch.bfloat16, 1e12,
                                 deadline=math.inf, clock=lambda: 0.0)
    assert m["size"] == "5x32x32" and m["did_not_fit"] == ["5x64x64", "5x48x48"]
    assert m["timed_steps"] == TINY.timed_steps and m["loss_finite"]
    assert model.transformer.is_gradient_checkpointing
    lora_b = [p for n, p in model.transformer.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # AdamW moved the zero-initialised B
    for n, p in model.transformer.named_parameters():
        if n in base_before:
            assert torch.equal(p, base_before[n]), n  # the base stays frozen
    with pytest.raises(torch.cuda.OutOfMemoryError, match="every size tried: 5x64x64"):
        gpu_train.run_train_case(model, params, TrainItem(((5, 64, 64),)), TINY, torch.device("cpu"),
                                 torch.bfloat16, 1e12, deadline=math.inf, clock=lambda: 0.0)


def test_fp8_base_and_optimizer_match_the_trainer(tiny_model):
    """The suite repeats two trainer settings literally (the config layer needs pydantic, absent
    on the GPU): fp8 storage as `models.memory.enable_fp8_storage`, AdamW/clip defaults."""
    from ufo_video.config import TrainSection
    from ufo_video.models.memory import enable_fp8_storage

    entry, folder, _ = tiny_model
    cls = _adapters()[entry.family]
    ours = gpu_models.build(entry, cls, folder, torch.device("cpu"), torch.bfloat16).transformer
    theirs = gpu_models.build(entry, cls, folder, torch.device("cpu"), torch.bfloat16).transformer
    gpu_models.enable_fp8_base(ours, torch.bfloat16)
    enable_fp8_storage(theirs, compute_dtype=torch.bfloat16)
    dtypes = {n: p.dtype for n, p in ours.named_parameters()}
    assert dtypes == {n: p.dtype for n, p in theirs.named_parameters()}
    assert torch.float8_e4m3fn in set(dtypes.values())
    t = TrainSection()
    assert gpu_train.ADAMW == {"lr": t.learning_rate, "betas": (t.adam_beta1, t.adam_beta2),
                               "weight_decay": t.adam_weight_decay, "eps": t.adam_epsilon}
    assert gpu_train.MAX_GRAD_NORM == t.max_grad_norm and not t.use_8bit_adam


def test_real_preset_shapes_run_on_the_meta_device():
    """Every real-size case of every available entry, forward on the meta device (no memory,
    no GPU): the shipped configs, sizes and adapter calls fit together before GPU time is spent,
    and the counted FLOPs are what docs/benchmarks.md quotes."""
    adapters = _adapters()
    meta = torch.device("meta")
    checked = 0
    for entry in load_entries(PRESETS["real"]):
        if unavailable_reason(entry, adapters):
            continue
        cls = adapters[entry.family]
        transformer = cls.build_meta(entry.configs)["transformer"].to(torch.bfloat16).to(meta)  # buffers too
        adapter = cls(cls.inspect(entry.configs), {"transformer": transformer})
        model = gpu_models.BuiltModel(adapter, cls, entry, sum(p.numel() for p in transformer.parameters()), 0.0)
        sizes = [(s, 1) for item in entry.train for s in item.sizes[:1]]
        sizes += [(entry.infer.size, 2)] if entry.infer else []
        for size, batch in sizes:
            inputs = gpu_models.step_inputs(model, size, batch, meta, torch.bfloat16)
            t = torch.full((batch,), 500.0, device=meta, dtype=torch.bfloat16)
            counted = gpu_flops.count_forward(lambda: gpu_models.predict(model, inputs.latents, t, inputs))
            assert counted.by_kind["linear"] > 0 and counted.by_kind["attention"] > 0
            if entry.lora_rank == 128 and size == (49, 256, 256):  # docs/benchmarks.md's first row
                assert (inputs.video_tokens, inputs.text_tokens) == (3328, 256)
                assert counted.total == pytest.approx(4.66e13, rel=0.01)
            checked += 1
    assert checked >= 3


def test_inference_parts_lost_to_oom_or_the_cap_are_listed(tiny_model, monkeypatch):
    from ufo_video.bench.gpu_infer import run_infer_case
    from ufo_video.lora import apply

    entry, folder, _ = tiny_model
    cls = _adapters()[entry.family]

    def no_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("simulated")

    monkeypatch.setattr(apply, "fuse_loras", no_memory)
    m = run_infer_case(entry, cls, folder, TINY, torch.device("cpu"), torch.bfloat16, math.inf, lambda: 0.0)
    assert m["skipped_parts"] == ["fused: out of memory"] and "fused_ratio" not in m
    assert m["unfused_ratio"] > 0 and m["weight_change_ratio"] > 0 and m["cached_s_per_step"] > 0
    assert m["cache_all_skipped_on"] == "unfused LoRA copy"
    late = run_infer_case(entry, cls, folder, TINY, torch.device("cpu"), torch.bfloat16, 0.0, lambda: 1.0)
    assert late["unfused_ratio"] > 0  # the first ratio always runs
    assert late["skipped_parts"] == [f"{p}: case time cap reached" for p in ("weight_change", "fused", "step_cache")]


def test_memory_configs_parse_and_ratios_are_side_by_side():
    """`<storage>/swap<N>[+offload]` labels, and the ratios the suite fills in from cases of the same
    entry and size: to the fastest, and to the same storage/offload without swap (hand-computed)."""
    from ufo_video.bench.gpu_memory import fill_ratios
    from ufo_video.bench.gpu_plan import parse_config

    c = parse_config("fp8_scaled/swap32+offload", "t")
    assert (c.storage, c.blocks_to_swap, c.activation_offload, c.label) == ("fp8_scaled", 32, True,
                                                                             "fp8_scaled/swap32+offload")
    for bad in ("fp4/swap1", "fp8/swap", "fp8/swap2+cpu", "bf16"):
        with pytest.raises(UfoError, match="swap<N>"):
            parse_config(bad, "t")

    def case(config: str, s: float, size: str = "81x512x512", status: str = "ok") -> GpuCase:
        m = parse_config(config, "t")
        return GpuCase(f"e/memory/{size}/{config}", "e", "memory", status=status,
                       metrics={"size": size, "s_per_step": s, "storage": m.storage,
                                "blocks_to_swap": m.blocks_to_swap, "activation_offload": m.activation_offload})

    cases = [case("bf16/swap0", 2.0), case("fp8/swap0", 2.5), case("fp8/swap20", 3.0), case("fp8/swap40+offload", 4.0),
             case("fp8/swap20", 9.0, size="81x480x832"), case("bf16/swap0", 1.0, status="oom")]
    fill_ratios(cases)
    m = [c.metrics for c in cases]
    assert [x.get("ratio_to_fastest") for x in m] == [1.0, 1.25, 1.5, 2.0, 1.0, None]
    assert m[2]["swap_overhead"] == 3.0 / 2.5  # against fp8/swap0
    assert "swap_overhead" not in m[3]  # no fp8/swap0+offload ran: no pair to compare with
    assert "swap_overhead" not in m[0] and "swap_overhead" not in m[4]


def test_memory_case_reports_the_planner_estimate_and_swaps_on_the_cpu(tmp_path):
    """One memory case on a tiny table entry: the blocks are swapped (clamped at the tiny preset,
    with a note), the LoRA trains, and the planner's estimate for the same setting is reported."""
    from ufo_video.bench.gpu_memory import run_memory_case
    from ufo_video.bench.gpu_plan import parse_config

    entry = next(e for e in load_entries(TINY) if e.memory)
    adapters = _adapters()
    folder = gpu_models.config_folder(entry, tmp_path)
    m = run_memory_case(entry, adapters[entry.family], folder, entry.memory[0].size,
                        parse_config("fp8_scaled/swap99+offload", "t"), TINY, torch.device("cpu"), torch.bfloat16,
                        deadline=float("inf"), clock=lambda: 0.0)
    assert m["blocks_to_swap"] == m["blocks"] == 2 and "clamped" in m["notes"][0]
    assert m["loss_finite"] and m["timed_steps"] == TINY.timed_steps and m["estimate_gb"] > 0
    assert m["peak_gb"] == "n/a on cpu" and m["estimate_error"] == "n/a on cpu"
