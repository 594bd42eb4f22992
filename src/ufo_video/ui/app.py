"""The page: five tabs over one kept model, one job at a time, served on localhost.

`build_app` makes the `gr.Blocks`; `launch` serves it. Every job that uses the device (generate,
compare, sweep, data check, starting a training) shares one queue slot (`concurrency_id="device"`,
limit 1), so a second job waits and the page shows its place in the queue. Light events (adding
a LoRA row, refreshing the training view) do not wait for it.

Only the output folder is added to Gradio's allowed paths; files the handlers return are written
there (training samples and dataset previews are copied in), uploads live in Gradio's own cache.
Paths typed into the page must lie in the allowed folders (`allowed_folders`); beyond this machine
the page asks for a login (`launch(auth=...)`, checked by `ui.cli`).
"""

from __future__ import annotations

from pathlib import Path

from ufo_video.ui.context import UiContext


# keeps two (or more) <video> elements of one group playing in step: play, pause and seek on one
# are applied to the others (media events do not bubble, hence the capture listener)
SYNC_JS = """
<script>
(() => {
  let busy = false;
  const group = (v) => v.closest('.ufo-sync-group');
  for (const type of ['play', 'pause', 'seeked', 'ratechange']) {
    document.addEventListener(type, (e) => {
      const v = e.target;
      if (busy || !(v instanceof HTMLVideoElement) || !group(v)) return;
      busy = true;
      for (const other of group(v).querySelectorAll('video')) {
        if (other === v) continue;
        if (Math.abs(other.currentTime - v.currentTime) > 0.05) other.currentTime = v.currentTime;
        other.playbackRate = v.playbackRate;
        if (type === 'play' && other.paused) other.play().catch(() => {});
        if (type === 'pause' && !other.paused) other.pause();
      }
      setTimeout(() => { busy = false; }, 0);
    }, true);
  }
})();
</script>
"""

# small videos drawn with sharp pixels; the sweep's charts wrap side by side
CSS = (".ufo-note{color:#666;font-size:13px} .ufo-sync-group video,#ufo-sweep-grid video{image-rendering:pixelated} "
       "#ufo-sweep-plot .charts{display:flex;flex-wrap:wrap;gap:4px 12px} "
       "#ufo-sweep-plot .charts svg{flex:1 1 330px;max-width:380px;height:auto}")


def allowed_folders(model: str | Path, out: Path, extra: list[str | Path] | None = ()) -> tuple[Path, ...]:
    """The folders typed paths may name: the working directory, the output folder, the default
    model folder and each `--allow-dir` (resolved; symlinks cannot lead out)."""
    folders = [Path.cwd(), out, Path(model), *(extra or ())]
    return tuple(dict.fromkeys(Path(f).expanduser().resolve() for f in folders))


def build_app(model: str | Path, out_dir: str | Path, allow_dirs: list[str | Path] | None = None,
              threads: int | None = None):  # fmt: skip
    """The Blocks app (not launched). `model`: the default model folder; `out_dir`: where every
    output goes (videos, sidecars, sweeps, previews); `allow_dirs`: folders typed paths may name
    besides the defaults (`allowed_folders`); `threads`: torch's CPU threads (None: the policy of
    every command, `threads.default_threads`)."""
    import gradio as gr

    from ufo_video.threads import apply_threads
    from ufo_video.ui import tab_compare, tab_data, tab_generate, tab_sweep, tab_train

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ctx = UiContext(str(model), out, allowed_folders(model, out, allow_dirs))
    ctx.threads = apply_threads(threads)
    with gr.Blocks(title="ufo-video", analytics_enabled=False) as app:
        gr.Markdown("## ufo-video: generate with UFO LoRAs, compare weights, choose a checkpoint, check data, watch training")
        with gr.Tab("Generate"):
            common = tab_generate.build(ctx)
        with gr.Tab("Compare"):
            tab_compare.build(ctx, common)
        with gr.Tab("Sweep and choose"):
            tab_sweep.build(ctx, common)
        with gr.Tab("Data"):
            tab_data.build(ctx)
        with gr.Tab("Train"):
            tab_train.build(ctx)
    app.queue(default_concurrency_limit=1)
    app.ufo_context = ctx  # for tests and the CLI
    return app


def launch(app, host: str = "127.0.0.1", port: int = 7860, share: bool = False, block: bool = True,
           auth: tuple[str, str] | None = None):  # fmt: skip
    """Serve on `host:port` (localhost unless told otherwise); no public link unless `share`;
    `auth` (user, password): Gradio's login page before anything else."""
    ctx = app.ufo_context
    return app.launch(
        server_name=host, server_port=port, share=share, allowed_paths=[str(ctx.out_dir)], auth=auth,
        prevent_thread_lock=not block, quiet=not share, show_error=True, head=SYNC_JS, css=CSS,
        footer_links=["api"], ssr_mode=False,
    )  # fmt: skip
