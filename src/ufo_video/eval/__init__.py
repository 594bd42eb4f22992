"""Video evaluation on CPU without downloaded weights: temporal consistency, flicker and motion.

metrics.py (the measures and their DEFINITIONS), video_io.py (read_frames), summary.py (trend
over a LoRA-weight sweep), vbench_extra.py (VBench's own dimensions when installed locally),
field_metrics.py + backbones.py (VBench's definitions on DINO / CLIP / RAFT loaded offline by us),
cli.py (`ufo-video eval`). Kept import-free so `ufo-video --help` does not load OpenCV.
"""
