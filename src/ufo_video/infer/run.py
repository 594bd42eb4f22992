"""Running a generation: output names, the generate loop, and the predict-script entry point.

`generate_videos` is what `ufo-video generate` and the guide's `predict_t2v.py` /
`predict_i2v.py` both call, so the scripts are a thin list of variables over the same code.
"""

from __future__ import annotations

import difflib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ufo_video.atomic import DiskFullError
from ufo_video.config import load_config
from ufo_video.errors import UfoError
from ufo_video.infer.outputs import next_index_path, sidecar_path, with_format, write_video_and_sidecar
from ufo_video.infer.settings import GenerationSettings, VideoRequest, apply_values, request_from_config, settings_from_config
from ufo_video.writable import check_free_space, ensure_writable, refuse_existing

Log = Callable[[str], None]


def plan_output_paths(n: int, out: Path | None, out_dir: Path, fmt: str) -> list[Path]:
    """One path per video: `--out` for a single video, else numbered files in `out_dir`."""
    if out is not None:
        if n != 1:
            raise UfoError(f"--out names one file but there are {n} prompts; use --out-dir DIR for a batch")
        return [with_format(out, fmt) if out.suffix or fmt != "png" else out]
    first = next_index_path(out_dir, fmt)
    start = int(first.name.split(".")[0])
    return [out_dir / (f"{start + i:08d}" if fmt == "png" else f"{start + i:08d}.{fmt}") for i in range(n)]


def generate_videos(
    settings: GenerationSettings,
    requests: list[VideoRequest],
    paths: list[Path],
    fmt: str,
    log: Log = print,
    generator: Any = None,
    overwrite: bool = False,
) -> list[tuple[Path, Path]]:
    """Load the model once (unless a `VideoGenerator` is passed) and write each video + sidecar.
    Everything that can be checked without the model is checked first (inputs, outputs, the
    model's variant for image-to-video), so a mistake costs no loading time and no lost video."""
    import torch
    from tqdm.auto import tqdm

    from ufo_video.infer.engine import VideoGenerator

    check_before_loading(settings, requests, paths, overwrite, check_model=generator is None, fmt=fmt)
    if generator is None:
        log(f"loading {settings.model} ...")
    gen = generator or VideoGenerator(settings, log=log)
    runtime = {"threads": torch.get_num_threads()}
    written = []
    batch = tqdm(total=len(requests), desc="prompts", unit="video", disable=len(requests) < 2, dynamic_ncols=True, mininterval=0)
    for i, (req, path) in enumerate(zip(requests, paths)):
        t0 = time.perf_counter()
        gen.progress_label = f"video {i + 1}/{len(requests)}" if len(requests) > 1 else "video"
        try:
            frames = gen.generate(req)
        finally:
            gen.progress_label = None
        try:
            out, side = write_video_and_sidecar(frames, path, fmt, settings, req, runtime, exclusive=not overwrite,
                                                routing=getattr(gen, "lora_routing", list)())  # fmt: skip
        except DiskFullError as exc:
            before = f"; the {len(written)} video(s) before it are written" if written else ""
            raise exc.with_context(exc.kept + before) from exc.__cause__  # the same seed makes the same video
        batch.update(1)
        log(f"wrote {out} ({frames.shape[0]} frames {frames.shape[1]}x{frames.shape[2]}, seed {req.seed}, "
            f"{time.perf_counter() - t0:.1f} s); settings in {side.name}")  # fmt: skip
        written.append((out, side))
    batch.close()
    return written


def check_before_loading(
    settings: GenerationSettings, requests: list[VideoRequest], paths: list[Path], overwrite: bool,
    check_model: bool = True, fmt: str = "mp4",
) -> None:
    """Inputs exist, image-to-video has its start image and an InP model, the LoRA files are
    readable and hold finite values, outputs can be written, fit on the disk (`estimated_bytes`) and
    would not replace a file unasked. Reads model configs only (no model weights)."""
    if not requests:
        raise UfoError("nothing to generate: no prompts")
    for req in requests:
        if req.end_image is not None and req.image is None:
            raise UfoError("--end-image needs --image (the start frame) as well")
        for what, img in (("start image", req.image), ("end image", req.end_image)):
            if img is not None and not Path(img).is_file():
                raise UfoError(f"{what} not found: {img} (give the path of a PNG or JPEG file)")
        if not req.prompt.strip():
            raise UfoError("the prompt is empty; give --prompt TEXT (or a prompts file)")
    from ufo_video.lora.formats import check_lora_files

    check_lora_files([spec.path for spec in settings.loras])  # found, readable, finite values
    if check_model:
        from ufo_video.infer.engine import task_of_request
        from ufo_video.models.registry import model_shell

        shell = model_shell(settings.model)
        for req in requests:
            task_of_request(shell, settings.model, req)
    if not overwrite:
        refuse_existing([p if p.exists() or not sidecar_path(p).exists() else sidecar_path(p) for p in paths])
    from ufo_video.infer.outputs import estimated_bytes

    each = estimated_bytes(settings, fmt)
    for folder in sorted({p.parent for p in paths}):
        n = sum(p.parent == folder for p in paths)
        check_free_space(folder, n * each, f"{n} video(s) of {settings.video_length} frames "
                         f"{settings.sample_size[0]}x{settings.sample_size[1]} as {fmt} with sidecar (estimate)")
        ensure_writable(folder)


# ---- predict_t2v.py / predict_i2v.py --------------------------------------------------------------

SCRIPT_VARIABLES = (
    "GPU_memory_mode", "model_name", "sample_size", "video_length", "fps", "weight_dtype", "lora_path",
    "lora_weight", "prompt", "negative_prompt", "guidance_scale", "seed", "num_inference_steps",
    "validation_image_start", "validation_image_end", "save_path",
)  # fmt: skip
_DTYPE_NAMES = {"torch.bfloat16": "bf16", "torch.float16": "fp16", "torch.float32": "fp32",
                "bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}  # fmt: skip


def _parse_script_args(argv: list[str], script: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in argv:
        name, sep, raw = item.partition("=")
        if sep and name not in SCRIPT_VARIABLES:
            close = difflib.get_close_matches(name, SCRIPT_VARIABLES, n=1, cutoff=0.6)
            hint = f" Did you mean: {' or '.join(close)}?" if close else ""
            raise UfoError(f"{script}: unknown variable {name!r}.{hint} The variables: {', '.join(SCRIPT_VARIABLES)}")
        if not sep:
            raise UfoError(
                f"{script}: arguments are variable=value overrides of the variables at the top of the script "
                f"(got {item!r}); variables: {', '.join(SCRIPT_VARIABLES)}"
            )
        values[name] = None if raw in ("None", "none", "null") else yaml.safe_load(raw)
        if name in ("prompt", "negative_prompt", "model_name", "save_path", "lora_path") and values[name] is not None:
            values[name] = raw  # text stays text, even "1" or "yes"
    return values


def _missing_model_message(model_name: str, script: str) -> str:
    return (
        f"model folder not found: {model_name}\n"
        f"  Put the model there (README's guide lists each supported model and its folder), "
        f"or try a tiny random model first:\n"
        f"    ufo-video model make-tiny models/tiny\n"
        f"  then set model_name = \"models/tiny\" at the top of {script} "
        f"(or run: python {script} model_name=models/tiny sample_size=[64,64] video_length=9 num_inference_steps=4)"
    )


def run_predict_script(variables: dict[str, Any], argv: list[str], script: str, log: Log = print) -> int:
    """Entry point of the guide's predict scripts: their variables (plus `name=value` overrides
    from the command line) become the validated config, then one video is generated into
    `save_path` as NNNNNNNN.mp4 with its sidecar. Returns the exit status."""
    from ufo_video.cli import _quiet_libraries

    _quiet_libraries()
    try:
        from ufo_video.threads import apply_threads

        apply_threads(None)
        v = {k: variables.get(k) for k in SCRIPT_VARIABLES}
        v.update(_parse_script_args(argv, script))
        if not Path(str(v["model_name"])).exists():
            raise UfoError(_missing_model_message(str(v["model_name"]), script))
        if v["weight_dtype"] is not None:
            v["weight_dtype"] = _DTYPE_NAMES.get(str(v["weight_dtype"]), v["weight_dtype"])
        cfg = load_config(None, [])
        values = {"model": v.pop("model_name"), **v}
        if values.get("negative_prompt") is None:
            values["negative_prompt"] = ""
        apply_values(cfg, values, log)
        settings = settings_from_config(cfg)
        paths = plan_output_paths(1, None, Path(cfg.infer.save_path), "mp4")
        generate_videos(settings, [request_from_config(cfg)], paths, "mp4", log)
    except UfoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
