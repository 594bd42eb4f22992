"""Print README's "Which card fits" table: for each shipped model config and setting, the first
rung of a memory ladder (bf16 -> scaled fp8 -> scaled fp8 + activation offload, each with the
smallest block swap that fits) on 16, 24, 48 and 80 GB cards, from `memory_plan`'s estimates.
Nothing here is measured. Run: python scripts/memory_table.py
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ufo_video.config import load_config
from ufo_video.memory_plan import MemoryPlanError, pick_blocks_to_swap
from ufo_video.train.memory_estimate import plan_inputs

ASSETS = Path(__file__).resolve().parents[1] / "src" / "ufo_video" / "assets"
GUIDE = Path(__file__).resolve().parents[1] / "configs" / "train_ufo.toml"
CARDS = (16, 24, 48, 80)
WAN_480P = (81, 480, 832)
# (row label, model folder, expert, overrides on configs/train_ufo.toml, clip (frames, H, W) or None:
# the guide's largest sample, here a 1024x1024 image)
ROWS = [
    ("EasyAnimate V5.1 12B, guide defaults (rank 128)", "easyanimate-v5.1-12b-inp-configs", None, [], None),
    ("EasyAnimate V5.1 12B, 49x384x672, rank 32", "easyanimate-v5.1-12b-inp-configs", None, ["lora.rank=32"],
     (49, 384, 672)),
    ("Wan 2.1 14B, guide defaults (rank 128)", "wan-configs/wan2.1-t2v-14b", None, [], None),
    ("Wan 2.1 14B, 81x480x832, rank 32", "wan-configs/wan2.1-t2v-14b", None, ["lora.rank=32"], WAN_480P),
    ("Wan 2.2 A14B (one expert), 81x480x832, rank 32", "wan-configs/wan2.2-t2v-a14b", "transformer",
     ["lora.rank=32"], WAN_480P),
    ("Wan 2.1 1.3B, 81x480x832, rank 32", "wan-configs/wan2.1-t2v-1.3b", None, ["lora.rank=32"], WAN_480P),
    ("LTX-2 19B, guide defaults (rank 128)", "ltx2-configs/ltx-2-19b-dev", None, [], None),
    ("LTX-2 19B, 121x512x768, rank 32", "ltx2-configs/ltx-2-19b-dev", None, ["lora.rank=32"], (121, 512, 768)),
]
LADDER = [("bf16", "bf16", False), ("fp8 scaled", "fp8_scaled", False),
          ("fp8 scaled + act. offload", "fp8_scaled", True)]


def cell(inputs, gb: int) -> str:
    free = int(gb * 1e9 * 0.97)
    for label, storage, offload in LADDER:
        try:
            n, est = pick_blocks_to_swap(replace(inputs, storage=storage, activation_offload=offload), free)
        except MemoryPlanError:
            continue
        return f"{label}{f', swap {n}' if n else ''} ({est.total / 1024**3:.0f})"
    return "no"


def main() -> None:
    print("| model, setting | tokens | " + " | ".join(f"{gb} GB" for gb in CARDS) + " |")
    print("|---|---|" + "---|" * len(CARDS))
    for label, folder, expert, overrides, clip in ROWS:
        cfg = load_config(GUIDE, [f"model.pretrained_model_name_or_path={ASSETS / folder}", *overrides])
        if expert:
            cfg.train.expert = expert
        inputs, _ = plan_inputs(cfg, "cuda", clip)
        print(f"| {label} | {inputs.tokens:,} | " + " | ".join(cell(inputs, gb) for gb in CARDS) + " |")


if __name__ == "__main__":
    main()
