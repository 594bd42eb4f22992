"""`ufo-video ui`: a local Gradio web app over the library (no second code path for generation).

Modules: `cli` (the subcommand; Gradio is imported only when it runs), `app` (the page, the
queue, launch), `session` (one loaded model kept for the whole app), `inputs` (checking what
the page sends, errors that name the input), one `tab_*` module per tab, `train_watch` (reading
a training output_dir and running a training as a subprocess). Nothing here imports Gradio at
import time except the modules that build the page.
"""
