"""`ufo-video ui` through gradio_client against the running app on the shipped tiny base: each
tab's function, errors shown by name while the app keeps running, one model load for many
weights and LoRAs, per-step progress, the Train tab's watch / start / stop, i2v sidecars that
outlive Gradio's upload cache, typed paths confined to the allowed folders and the login needed
beyond this machine."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_sweep_cli import TINY_BASE, make_run_checkpoints
from test_train_helpers import make_dataset, write_config

import gradio_client  # noqa: E402  (gradio is a dependency of ufo-video)
from gradio_client import handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from ufo_video.ui.inputs import MAX_LORAS  # noqa: E402

# model, height, width, frames, fps, steps, guidance, dtype, memory mode, step cache, blocks to swap
SETTINGS = [str(TINY_BASE), 64, 64, 9, 8, 2, 6.0, "fp32", "model_full_load", "none", 0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lora_rows(*rows: tuple[str, float], more: str = "") -> list:
    flat: list = []
    for path, weight in rows:
        flat += [str(path), weight]
    return flat + ["", 0.15] * (MAX_LORAS - len(rows)) + [more]


def gen_args(prompt: str, *loras: tuple[str, float], mode: str = "t2v", image=None, settings=SETTINGS, seed=43,
             more: str = "") -> list:  # fmt: skip
    return [mode, image, None, prompt, "", seed, *settings, *lora_rows(*loras, more=more)]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    from ufo_video.ui.app import build_app, launch

    out = tmp_path_factory.mktemp("ui-out")
    demo = build_app(TINY_BASE, out, allow_dirs=[tmp_path_factory.getbasetemp()])
    port = free_port()
    launch(demo, "127.0.0.1", port, block=False)
    client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(out.parent / "dl"))
    yield demo, client, out
    job = demo.ufo_context.train_job
    if job.running():
        job.proc.kill()
    demo.close()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run_checkpoints(tmp_path_factory.mktemp("run") / "ufo-run")


def sidecar(path: str) -> dict:
    return json.loads(Path(path).read_text())


def test_generate_keeps_one_model_across_weights_and_loras(app, run_dir: Path) -> None:
    demo, client, out = app
    ctx = demo.ufo_context
    a, b = run_dir / "checkpoint-100.safetensors", run_dir / "checkpoint-200.safetensors"
    video, side, log = client.predict(*gen_args("a red square moves right", (a, 0.15)), api_name="/generate")
    assert Path(video).suffix == ".mp4" and Path(video).stat().st_size > 0
    first = sidecar(side)
    assert first["settings"]["loras"] == [{"path": str(a.resolve()), "weight": 0.15}]
    from ufo_video.threads import default_threads

    # the page uses the thread policy of every command (not torch's one per core)
    assert first["runtime"]["threads"] == ctx.threads == default_threads()
    assert first["frames_shape"] == [9, 64, 64, 3] and len(list((out / "generate").glob("*.mp4"))) == 1
    loads = ctx.session.loads
    _, side2, log2 = client.predict(*gen_args("a red square moves right", (a, 0.5)), api_name="/generate")
    _, side3, _ = client.predict(*gen_args("a red square moves right", (a, 0.5), more=f"{b}:1.0"), api_name="/generate")
    assert ctx.session.loads == loads and "model kept loaded" in log2  # weights and LoRAs changed, no reload
    hashes = {sidecar(s)["frames_sha256"] for s in (side, side2, side3)}
    assert len(hashes) == 3
    assert [x["weight"] for x in sidecar(side3)["settings"]["loras"]] == [0.5, 1.0]


def test_each_denoising_step_is_reported() -> None:
    from ufo_video.infer.settings import GenerationSettings, VideoRequest
    from ufo_video.ui.session import ModelSession

    steps: list[tuple[int, int]] = []
    session = ModelSession(log=lambda _: None)
    settings = GenerationSettings(str(TINY_BASE), (64, 64), 9, 8, 3, 6.0, "model_full_load", "fp32")
    with session.use(settings, lambda done, total: steps.append((done, total))) as gen:
        gen.generate(VideoRequest("a blue circle", "", 1))
    assert steps == [(1, 3), (2, 3), (3, 3)]


def test_jobs_wait_their_turn_with_a_position_and_report_each_step(app) -> None:
    """A generation and a compare sent together: one runs while the other waits in the one device
    queue with its place shown; the generation reports each denoising step as progress."""
    from gradio_client.utils import Status

    demo, client, _ = app
    slow = SETTINGS[:5] + [12] + SETTINGS[6:]
    jobs = [client.submit(*gen_args("a red square moves right", settings=slow), api_name="/generate"),
            client.submit("a blue circle", "", 5, "", 0.0, "", 0.0, *SETTINGS, api_name="/compare")]  # fmt: skip
    running = (Status.PROCESSING, Status.PROGRESS)
    seen_steps, waited, codes = set(), [], []
    while not all(job.done() for job in jobs):
        status = [job.status() for job in jobs]
        codes.append([(s.code.value, s.rank) for s in status])
        for me, other in ((0, 1), (1, 0)):
            if status[me].code == Status.IN_QUEUE and status[me].rank is not None and status[other].code in running:
                waited.append(status[me].rank)
        progress = status[0].progress_data
        if progress and progress[0].unit == "steps":
            seen_steps.add((progress[0].index, progress[0].length))
        time.sleep(0.02)
    for job in jobs:
        job.result()
    assert waited, f"neither job waited in the queue while the other ran: {codes}"
    assert len(seen_steps) >= 2 and all(total == 12 for _, total in seen_steps), seen_steps
    device_jobs = {f.api_name: (f.concurrency_id, f.concurrency_limit) for f in demo.fns.values()
                   if f.api_name in ("generate", "compare", "sweep", "data_check", "train_start")}  # fmt: skip
    assert len(device_jobs) == 5 and set(device_jobs.values()) == {("device", 1)}


def test_bad_inputs_show_an_error_naming_the_input_and_the_app_keeps_running(app, run_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file
    import torch

    _, client, _ = app
    lora = run_dir / "checkpoint-100.safetensors"
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    other = tmp_path / "other-model.safetensors"
    key = "lora_unet__transformer_blocks_9_attn1_to_q"  # the tiny base has fewer blocks
    save_file({f"{key}.lora_down.weight": torch.zeros(4, 32), f"{key}.lora_up.weight": torch.zeros(32, 4),
               f"{key}.alpha": torch.tensor(4.0)}, str(other))  # fmt: skip
    bad_model = [str(tmp_path)] + SETTINGS[1:]
    cases = [
        (gen_args("x", settings=bad_model), "model folder"),
        (gen_args("x", (lora, "abc")), "LoRA 1 weight: 'abc' is not a number"),
        (gen_args("x", (lora, None)), "LoRA 1 weight: empty or not a number"),  # the browser sends text as nothing
        (gen_args("x", (lora, 3.0)), "LoRA 1 weight: 3.0 is above the maximum 2"),
        (gen_args("x", settings=SETTINGS[:5] + [None] + SETTINGS[6:]), "steps: empty or not a number"),
        (gen_args("x", (tmp_path / "missing.safetensors", 0.1)), "LoRA 1: file not found"),
        (gen_args("x", (other, 0.1)), "transformer_blocks"),
        (gen_args("x", more=f"{lora}:heavy"), "more LoRAs, line 1 weight: 'heavy' is not a number"),
        (gen_args("x", more=f"\n{lora}:5"), "more LoRAs, line 2 weight"),
        (gen_args("x", mode="i2v", image=handle_file(str(not_image))), "start image"),
        (gen_args("x", mode="i2v"), "start image"),
        (gen_args("  "), "prompt"),
        (gen_args("x", seed="forty"), "seed"),
        (gen_args("x", settings=SETTINGS[:10] + ["two"]), "blocks to swap: 'two' is not a number"),
        # the engine's rule, named by the page's field (not the flag --blocks-to-swap)
        (gen_args("x", settings=SETTINGS[:8] + ["group_offload", "none", 1]), r"^blocks to swap .*group_offload"),
    ]
    for args, named in cases:
        with pytest.raises(AppError, match=named):
            client.predict(*args, api_name="/generate")
    image = tmp_path / f"start-{tmp_path.name}.png"
    Image.fromarray(np.full((64, 64, 3), (200, 30, 30), np.uint8)).save(image)
    video, side, _ = client.predict(*gen_args("a red square", (lora, 0.1), mode="i2v", image=handle_file(str(image))),
                                    api_name="/generate")  # fmt: skip
    assert Path(video).is_file()


def test_i2v_sidecar_keeps_its_start_image_so_from_sidecar_works(app, run_dir: Path, tmp_path: Path, capsys) -> None:
    """The start image is copied next to the video and the sidecar names the copy: Gradio's upload
    cache may be gone when the video is made again."""
    from gradio.utils import get_upload_folder

    from ufo_video.cli import main

    _, client, out = app
    image = tmp_path / f"start-{tmp_path.name}.png"
    Image.fromarray(np.full((64, 64, 3), (30, 200, 30), np.uint8)).save(image)
    video, side, _ = client.predict(*gen_args("a green square", (run_dir / "checkpoint-100.safetensors", 0.1),
                                              mode="i2v", image=handle_file(str(image))), api_name="/generate")  # fmt: skip
    served = out / "generate" / Path(side).name  # the sidecar as written (the client downloads a copy)
    kept = Path(sidecar(str(served))["request"]["image"])
    assert kept.parent == out / "generate" and kept.name == f"{Path(video).stem}-start.png"
    assert kept.read_bytes() == image.read_bytes()
    uploads = list(Path(get_upload_folder()).rglob(image.name))
    assert uploads, "the upload should be in Gradio's cache"
    for upload in uploads:
        upload.unlink()
    assert main(["generate", "--from-sidecar", str(served)]) == 0
    assert "reproduced exactly" in capsys.readouterr().out


def test_compare_two_weights_side_by_side_with_metrics(app, run_dir: Path) -> None:
    _, client, out = app
    lora = str(run_dir / "checkpoint-200.safetensors")
    video_a, video_b, table, log = client.predict("a green ball bounces", "", 7, "", 0.0, lora, 1.0, *SETTINGS,
                                                  api_name="/compare")  # fmt: skip
    rows = table["data"]
    assert [r[:3] for r in rows] == [["A", "base (no LoRA)", 0.0], ["B", "checkpoint-200.safetensors", 1.0]]
    assert rows[0][3:] != rows[1][3:] and all(isinstance(v, float) for v in rows[0][3:])
    assert Path(video_a).is_file() and Path(video_b).is_file()
    sides = [out / "compare" / Path(v).with_suffix(".json").name for v in (video_a, video_b)]
    assert [sidecar(str(s))["settings"]["loras"] for s in sides] == [[], [{"path": lora, "weight": 1.0}]]
    with pytest.raises(AppError, match="B LoRA file"):
        client.predict("x", "", 7, "", 0.0, "", 0.5, *SETTINGS, api_name="/compare")


def test_sweep_checkpoints_by_weights_recommends_by_the_rule(app, run_dir: Path) -> None:
    _, client, out = app
    grid, table, plot, recommendation, report, log = client.predict(
        str(run_dir), "0,0.5,1", 0.0, "warp_error", "a red square moves right\na blue circle moves down", "", 3, "1,2",
        *SETTINGS, api_name="/sweep")  # fmt: skip
    rows = table["data"]
    assert [(r[0], r[1]) for r in rows] == [("base (no LoRA)", 0.0)] + [(c, w) for w in (0.5, 1.0) for c in ("checkpoint-100", "checkpoint-200")]
    record = json.loads(next((out / "sweeps").glob("*/sweep.json")).read_text())
    rec = record["recommendation"]
    assert rec["pairs"] == 4 and all(r[2] == 4 and "[" in r[4] and "[" in r[5] for r in rows[1:])
    eligible = [(c["checkpoint"], c["weight"]) for c in rec["candidates"] if c["eligible"]]
    assert (rec["checkpoint"] is None) == (not eligible)
    assert "Recommended" in recommendation and plot.count("<svg") == 4 and 'class="errbar"' in plot
    assert Path(report).name == "sweep.html"
    assert Path(grid).suffix == ".mp4"
    with pytest.raises(AppError, match=r"^weights '0,zero'"):  # the page's field, not the flag --weights
        client.predict(str(run_dir), "0,zero", 0.8, "warp_error", "x", "", 3, "", *SETTINGS, api_name="/sweep")
    with pytest.raises(AppError, match="keep at least this share"):
        client.predict(str(run_dir), "0,1", "most", "warp_error", "x", "", 3, "", *SETTINGS, api_name="/sweep")
    with pytest.raises(AppError, match=r"^keep at least this share of the base's motion \(0-1\): 2 is above the maximum 1"):
        client.predict(str(run_dir), "0,1", 2, "warp_error", "x", "", 3, "", *SETTINGS, api_name="/sweep")


def test_each_event_draws_at_most_one_progress_bar(app) -> None:
    """While a job runs, Gradio draws a progress bar on each of its outputs unless told otherwise;
    on a page of empty outputs they overlapped. Every event with several outputs shows its bar on
    one of them, or none."""
    deps = app[0].get_config_file()["dependencies"]
    named = {d.get("api_name"): d for d in deps}
    for name in ("generate", "compare", "sweep", "data_check", "train_watch", "train_start"):
        assert len(named[name]["show_progress_on"] or []) == 1 < len(named[name]["outputs"]), name
    several = [d for d in deps if len(d["outputs"]) > 1]
    assert len(several) >= 9
    for d in several:
        one = d["show_progress"] == "hidden" or len(d["show_progress_on"] or []) == 1
        assert one, (d.get("api_name"), d["show_progress"], d["show_progress_on"], len(d["outputs"]))


def test_data_check_lists_problems_and_previews_clips(app, tmp_path: Path) -> None:
    _, client, _ = app
    root = make_dataset(tmp_path / "ds")
    meta = json.loads((root / "metadata.json").read_text())
    meta.append({"file_path": "train/missing.mp4", "text": "gone", "type": "video"})
    (root / "metadata.json").write_text(json.dumps(meta))
    summary, problems, gallery = client.predict(str(root / "metadata.json"), "", "", 2, api_name="/data_check")
    assert "7 entries, 6 ok, 1 problem" in summary
    assert [r[1:3] for r in problems["data"]] == [["train/missing.mp4", "missing_file"]]
    assert len(gallery) == 2
    (root / "notes.json").write_text("this is not json")
    with pytest.raises(AppError, match="metadata file"):
        client.predict(str(root / "notes.json"), "", "", 0, api_name="/data_check")


def test_train_tab_watches_starts_and_stops_a_training(app, tmp_path: Path, tiny_model: Path) -> None:
    from ufo_video.media_write import write_video

    demo, client, _ = app
    with pytest.raises(AppError, match="output_dir: folder not found"):
        client.predict(str(tmp_path / "nope"), api_name="/train_watch")
    data = make_dataset(tmp_path / "ds")
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "t.toml", tiny_model, data, out, max_train_steps=10000, checkpointing_steps=10000,
                       save_state=False)  # fmt: skip
    with pytest.raises(AppError, match=r"^overrides: unknown config key 'learning_rat'"):  # the field, not "command line"
        client.predict(str(cfg), "learning_rat=1e-4", api_name="/train_start")
    job = demo.ufo_context.train_job
    # a training started here whose trainer has not created its output_dir yet: the watch waits, no error
    job.proc, job.output_dir = subprocess.Popen(["sleep", "60"]), tmp_path / "not-yet"
    try:
        status, *_ = client.predict(str(tmp_path / "not-yet"), api_name="/train_watch")
        assert f"waiting for the trainer to create {tmp_path / 'not-yet'}" in status
    finally:
        job.proc.kill()
        job.proc.wait()
    watched, log = client.predict(str(cfg), "learning_rate=1e-4", api_name="/train_start")
    assert Path(watched) == out and "ufo_video train" in log
    status, *_ = client.predict(str(out), api_name="/train_watch")  # at once, as the page's timer does
    assert "waiting for the trainer" in status or out.is_dir()
    deadline = time.time() + 120
    while not (out / "losses.jsonl").is_file() or not (out / "losses.jsonl").read_text().strip():
        assert job.running() and time.time() < deadline, job.log_tail()
        time.sleep(0.5)
    with pytest.raises(AppError, match="busy with the training"):  # one job at a time on the device
        client.predict(*gen_args("x"), api_name="/generate")
    client.predict(api_name="/train_stop")
    assert job.proc.wait(60) == 143, job.log_tail()  # Stop sends SIGTERM
    ckpts = sorted(out.glob("checkpoint-*.safetensors"))
    assert ckpts, job.log_tail()  # stopping saved a checkpoint, as Ctrl-C does
    write_video(np.zeros((5, 32, 32, 3), np.uint8), out / "samples" / "step-000001-prompt0-w0.1.mp4", fps=8)
    status, loss, lr, table, gallery, tail = client.predict(str(out), api_name="/train_watch")
    steps = [json.loads(x)["step"] for x in (out / "losses.jsonl").read_text().splitlines()]
    assert f"step {steps[-1]}" in status and "stopped (exit status 143)" in status
    assert "<svg" in loss and "<svg" in lr and "interrupted" in tail
    bars = [line for line in tail.splitlines() if line.startswith("train:")]
    assert len(bars) == 1 and "loss=" in bars[0], tail  # the bar's last state, not each redraw
    assert [r[0] for r in table["data"]] == [int(c.stem.split("-")[1]) for c in ckpts]
    assert len(gallery) == 1
    with pytest.raises(AppError, match="no training is running"):
        client.predict(api_name="/train_stop")


def test_ui_command_help_and_bad_port(capsys) -> None:
    proc = subprocess.run([sys.executable, "-m", "ufo_video", "ui", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--host" in proc.stdout and "127.0.0.1" in proc.stdout
    assert all(flag in proc.stdout for flag in ("--threads", "--auth", "--no-auth", "--allow-dir"))
    from ufo_video.cli import main

    assert main(["ui", "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err
    assert main(["ui", "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
    # Gradio writes a .pyi stub beside any module that subclasses a component: the page must not
    ui_dir = Path(__file__).resolve().parent.parent / "src" / "ufo_video" / "ui"
    assert not list(ui_dir.glob("*.pyi"))


def test_page_starts_from_the_tiny_base_size_or_the_reference_values(tmp_path: Path) -> None:
    from ufo_video.ui.tab_generate import page_defaults

    tiny = page_defaults(str(TINY_BASE))
    assert (tiny["height"], tiny["width"], tiny["frames"], tiny["steps"]) == (64, 64, 9, 12)
    real = page_defaults(str(tmp_path / "EasyAnimateV5.1-12b-zh-InP"))
    assert (real["height"], real["width"], real["frames"], real["steps"], real["seed"]) == (384, 672, 49, 50, 43)


def test_size_fields_name_the_chosen_models_rules(app, tmp_path: Path) -> None:
    """The tiny base's VAE takes 2k+1 frames and 8-pixel sides: the page says so, not the 4k+1 / 16
    of most models; without a model folder the labels say the rule is the model's."""
    from ufo_video.ui.tab_generate import size_labels

    assert size_labels(str(TINY_BASE)) == {"height": "height (multiple of 8)", "width": "width (multiple of 8)",
                                           "frames": "frames (2k+1)"}  # fmt: skip
    assert size_labels(str(tmp_path / "missing"))["frames"] == "frames (the model's rule)"
    labels = [c.get("props", {}).get("label") for c in app[0].get_config_file()["components"]]
    assert "frames (2k+1)" in labels and not any("4k+1" in str(label) for label in labels)


def test_training_log_shows_one_line_per_progress_bar_state(tmp_path: Path) -> None:
    from ufo_video.ui.train_watch import TrainJob

    job = TrainJob()
    job.log_path = tmp_path / "train.log"
    job.log_path.write_text("$ python -m ufo_video train t.toml\nloading\n"
                            "\rsteps:   0%|  | 0/3\rsteps:  33%|# | 1/3 [loss=0.5]\rsteps:  33%|# | 1/3 [loss=0.5, lr=1e-4]"
                            "\rsteps:  67%|## | 2/3 [loss=0.4, lr=1e-4]\r\nsaved checkpoint-2\n\rsteps: 100%|###| 3/3\r")
    assert job.log_tail().splitlines() == ["$ python -m ufo_video train t.toml", "loading",
                                           "steps:  67%|## | 2/3 [loss=0.4, lr=1e-4]", "saved checkpoint-2",
                                           "steps: 100%|###| 3/3"]  # fmt: skip


def test_beyond_this_machine_the_page_needs_auth_or_an_explicit_no_auth(capsys) -> None:
    import argparse

    from ufo_video.cli import main
    from ufo_video.ui.cli import is_loopback, login

    for argv in (["--host", "0.0.0.0"], ["--host", "192.168.1.5"], ["--share"]):
        assert main(["ui", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--auth USER:PASSWORD" in err and "--no-auth" in err, err
    assert main(["ui", "--host", "0.0.0.0", "--auth", "nopassword"]) == 2
    assert "--auth: give USER:PASSWORD" in capsys.readouterr().err
    assert all(map(is_loopback, ("127.0.0.1", "localhost", "::1", "127.0.1.1"))) and not is_loopback("0.0.0.0")

    def ns(**kw):
        return argparse.Namespace(**{"host": "0.0.0.0", "share": False, "auth": None, "no_auth": False, **kw})

    assert login(ns(auth="ana:s3cret:x")) == ("ana", "s3cret:x")
    assert login(ns(no_auth=True)) is None
    assert "anyone who reaches the page" in capsys.readouterr().err
    assert login(ns(host="127.0.0.1")) is None and capsys.readouterr().err == ""


def test_typed_paths_outside_the_allowed_folders_are_refused_naming_allow_dir(app, tmp_path: Path) -> None:
    _, client, _ = app
    outside = Path("/usr/share")
    cases = [
        (lambda: client.predict(*gen_args("x", (outside / "x.safetensors", 0.1)), api_name="/generate"), "LoRA 1"),
        (lambda: client.predict(*gen_args("x", settings=["/usr"] + SETTINGS[1:]), api_name="/generate"), "model folder"),
        (lambda: client.predict("/usr/share/x.json", "", "", 0, api_name="/data_check"), "metadata file"),
        (lambda: client.predict(str(outside), api_name="/train_watch"), "output_dir"),
        (lambda: client.predict("/usr/share/t.toml", "", api_name="/train_start"), "config file"),
        (lambda: client.predict(str(outside / "run"), "0,1", 0.8, "warp_error", "x", "", 3, "", *SETTINGS,
                                api_name="/sweep"), "checkpoints"),  # fmt: skip
    ]
    for call, name in cases:
        with pytest.raises(AppError, match=rf"^{name}: .* outside the folders this app may read .* --allow-dir /usr"):
            call()


def test_with_auth_the_page_asks_for_the_login(tmp_path: Path) -> None:
    from ufo_video.ui.app import build_app, launch

    demo = build_app(TINY_BASE, tmp_path / "out", threads=1)
    port = free_port()
    launch(demo, "127.0.0.1", port, block=False, auth=("ana", "s3cret"))
    try:
        url = f"http://127.0.0.1:{port}/"
        with pytest.raises(Exception, match="(?i)login|auth|401|403|Could not"):  # gradio_client refuses without it
            gradio_client.Client(url, verbose=False)
        client = gradio_client.Client(url, verbose=False, auth=("ana", "s3cret"))
        with pytest.raises(AppError, match="output_dir: give a training output folder"):  # reached the page's handler
            client.predict("", api_name="/train_watch")
    finally:
        demo.close()
