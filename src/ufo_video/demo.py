"""`ufo-video demo`: the whole mission in miniature on a tiny model, end to end on a CPU.

Each step is a plain function over the previous steps' outputs, so the demo grows with the tool:
today it makes a tiny model in both on-disk layouts, loads both strictly and checks they agree,
and reports what the real 12B model would need.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ufo_video.errors import UfoError

REAL_CONFIGS = Path(__file__).resolve().parent / "assets" / "easyanimate-v5.1-12b-inp-configs"


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="run the end-to-end demo on a tiny model (CPU, minutes)")
    demo.add_argument("--out", type=Path, default=Path("demo-out"))
    demo.set_defaults(func=lambda args: run_demo(args.out))


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def run_demo(out: Path) -> int:
    from ufo_video.models.check import check_model, format_report
    from ufo_video.models.registry import load_model
    from ufo_video.models.tiny import make_tiny

    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    models = {}
    for layout in ("diffusers", "original"):
        t = _step(f"make a tiny EasyAnimate V5.1 InP model ({layout} layout)")
        folder = out / f"tiny-{layout}"
        if not (folder / "transformer").is_dir():
            make_tiny(folder, layout=layout, seed=0)
        print(format_report(check_model(folder), meta=False))
        models[layout] = load_model(folder)
        timings[f"make+check {layout}"] = time.perf_counter() - t

    t = _step("both layouts give the same video (2 denoising steps, 9 frames, 64x64)")
    frames = {}
    for layout, model in models.items():
        pipe = model.pipeline()
        result = pipe(prompt="a red ball rolls across the floor", negative_prompt="", num_frames=9, height=64,
                      width=64, num_inference_steps=2, generator=torch.Generator().manual_seed(43), output_type="pt")  # fmt: skip
        frames[layout] = result.frames
    same = torch.equal(frames["diffusers"], frames["original"])
    print(f"identical output from both layouts: {same}")
    if not same:
        raise UfoError("the two layouts disagree; please report this with `ufo-video model check` output")
    timings["generate x2"] = time.perf_counter() - t

    if REAL_CONFIGS.is_dir():
        t = _step("what the real EasyAnimate V5.1 12B InP needs (configs only, no download)")
        print(format_report(check_model(REAL_CONFIGS, meta=True), meta=True))
        timings["12B meta check"] = time.perf_counter() - t

    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    print(f"\ndemo finished; outputs in {out}")
    return 0
