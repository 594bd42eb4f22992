"""LTX-2 / LTX-2.3 (Lightricks) on diffusers' classes: the third model family.

The adapter (`adapter.py`, registry key `ltx2`) generates and trains. Parts: folders.py
(detection, strict loading), single_file.py (the transformer as one file with LTX-2's original
names, through diffusers' converter), training.py, tiny.py, lora_format.py (see docs/ltx2-notes.md).
"""
