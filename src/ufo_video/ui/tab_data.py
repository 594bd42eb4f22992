"""Data tab: `data check` on a metadata file (its problems as a table) and previews of the first
clips exactly as the trainer will see them (the trainer's own loader, as `data preview`).

Each Check first empties the summary, table and previews, so an error is never shown above the
previous dataset's results; the problems table wraps long messages and paths (CSS in `app`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ufo_video.errors import UfoError
from ufo_video.ui.context import DEVICE, UiContext
from ufo_video.ui.inputs import existing_file, number, user_errors

FILE_LEVEL = ("invalid_json", "missing_field", "wrong_type")  # the metadata file itself is bad


def _config(ctx: UiContext, meta: Path, root: Any, config: Any):
    from ufo_video.config import load_config

    cfg_path = existing_file(config, "config file", (".toml", ".yaml", ".yml"), ctx.allowed) if str(config or "").strip() else None
    cfg = load_config(cfg_path, [])
    root_path = Path(str(root).strip()).expanduser() if str(root or "").strip() else meta.parent
    ctx.confine(root_path, "dataset root")
    if not root_path.is_dir():
        raise UfoError(f"dataset root: folder not found: {root_path}")
    cfg.data.train_data_meta = str(meta)
    cfg.data.train_data_dir = str(root_path)
    return cfg


def check(ctx: UiContext, meta: Any, root: Any, config: Any, previews: Any) -> tuple[str, list[list], list[str]]:
    from ufo_video.data.check import check_dataset

    meta_path = existing_file(meta, "metadata file", (".json", ".jsonl", ".csv"), ctx.allowed)
    n = int(number(previews, "clips to preview", minimum=0, maximum=16, integer=True))
    cfg = _config(ctx, meta_path, root, config)
    report = check_dataset(meta_path, cfg.data.train_data_dir, cfg, workers=1)
    bad_file = [p for p in report.problems if p.index is None and p.problem in FILE_LEVEL]
    if bad_file:
        raise UfoError(f"metadata file: {meta_path} is not a usable metadata file: {bad_file[0].message}")
    rows = [[p.index, p.file_path, p.problem, p.message] for p in report.problems]
    summary = f"**{report.entries} entries, {report.ok} ok, {len(report.problems)} problem{'s' if len(report.problems) != 1 else ''}**"
    shown: list[str] = []
    if n and report.ok:
        # previews come from the entries that load; the trainer itself stops when more than
        # data.max_failed_fraction of them fail, which the summary says
        limit = cfg.data.max_failed_fraction
        cfg.data.max_failed_fraction = 1.0
        shown = write_previews(ctx, cfg, n)
        if report.problems:
            summary += (f"  \nPreviews skip the entries with problems; fix or remove them before training "
                        f"(the trainer stops when more than data.max_failed_fraction={limit:g} of the samples fail).")
    elif n:
        summary += " (no usable entry to preview)"
    return summary, rows, shown


def write_previews(ctx: UiContext, cfg: Any, n: int) -> list[str]:
    """The first `n` training clips (after bucketing, cropping and frame sampling) as mp4/png."""
    from PIL import Image

    from ufo_video.data.loader import build_train_loader
    from ufo_video.media_write import write_video

    cfg.data.dataloader_num_workers = 0
    root = ctx.folder("data-previews")
    out = root / f"{1 + max((int(p.name) for p in root.iterdir() if p.name.isdigit()), default=0):04d}"
    out.mkdir()
    written: list[str] = []
    loader = build_train_loader(cfg, seed=cfg.train.seed, epoch=0)
    for batch in loader:
        for clip in batch["pixel_values"]:
            frames = ((clip + 1) / 2).permute(1, 0, 2, 3).clamp(0, 1)  # [F, 3, H, W] in [0, 1]
            if frames.shape[0] == 1:  # an image sample: one frame
                path = out / f"clip-{len(written):02d}.png"
                pixels = (frames[0].permute(1, 2, 0) * 255).round().byte().numpy()
                Image.fromarray(pixels).save(path)
            else:
                path = write_video(frames, out / f"clip-{len(written):02d}.mp4", fps=cfg.infer.fps)
            written.append(str(path))
            if len(written) >= n:
                return written
    return written


def build(ctx: UiContext) -> None:
    import gradio as gr

    gr.Markdown("Decode every entry of a dataset and list its problems (as `ufo-video data check`), then preview a "
                "few clips exactly as the trainer will see them.")  # fmt: skip
    with gr.Row():
        meta = gr.Textbox(label="metadata file (.json / .jsonl / .csv)", scale=3, elem_id="ufo-data-meta")
        root = gr.Textbox(label="dataset root (default: the metadata file's folder)", scale=2)
    with gr.Row():
        config = gr.Textbox(label="config file (optional: sizes, frames, clip mode)", scale=3)
        previews = gr.Number(value=4, label="clips to preview", scale=1)
    run = gr.Button("Check", variant="primary", elem_id="ufo-data-check")
    summary = gr.Markdown(elem_id="ufo-data-summary")
    problems = gr.Dataframe(headers=["entry", "file", "problem", "message"], label="problems", interactive=False, wrap=True,
                            elem_id="ufo-data-problems", column_widths=["8%", "27%", "15%", "50%"])  # fmt: skip
    gallery = gr.Gallery(label="clips as the trainer sees them", columns=4, height=220)

    @user_errors
    def on_check(meta_v, root_v, config_v, previews_v):
        return check(ctx, meta_v, root_v, config_v, previews_v)

    outputs = [summary, problems, gallery]
    cleared = run.click(lambda: ("", None, None), outputs=outputs, queue=False, api_name=False,
                        show_progress="hidden")  # fmt: skip
    cleared.then(on_check, inputs=[meta, root, config, previews], outputs=outputs, api_name="data_check",
                 show_progress_on=gallery, **DEVICE)  # fmt: skip  (one progress bar, not one per output)
