"""LTX-2 / LTX-2.3 (Lightricks) on diffusers' classes: the third model family.

The adapter (`adapter.py`, registry key `ltx2`) generates; training is not supported yet. Parts:
folders.py (detection, strict loading), tiny.py, lora_format.py (see docs/ltx2-notes.md).
"""
