"""LoRA training: flow-matching objective, inpaint masks, the loop, checkpoints and exact resume.

Recipe (see `loop.train`): setup (`setup.py`) -> resume (`saving.restore`) -> loop over
accumulation groups (`loop.optimizer_step`, loss in `step.py` / `objective.py` / `masks.py`) ->
checkpoints (`saving.py`, `checkpoint.py`) and validation clips (`validation.py`) -> summary.
"""
