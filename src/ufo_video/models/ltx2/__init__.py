"""LTX-2 / LTX-2.3 (Lightricks) on diffusers' classes: the third model family.

Self-contained parts only for now (tiny folders, shipped configs, the LoRA file format); the
adapter is drafted in `adapter.py` and not yet registered (see docs/ltx2-notes.md).
"""
