"""Keys of the latent / text-embedding cache: what a cached tensor was computed from.

A key is a hash of everything that determines the tensor, so a changed input or setting gives a
new key (a miss, re-encoded by ``ufo-video data cache``) and an unchanged one is reused:

- model fingerprints (``model_fingerprints``):
  - ``video`` (VAE items: latents and conditioning): the resolved model folder, what the model's
    adapter names in ``fingerprint_sources(path)["video"]`` (config texts and the name/size/
    mtime_ns of weight files: e.g. the transformer and VAE configs and VAE weights),
    ``model.weight_dtype`` and ``CACHE_FORMAT``;
  - ``text`` (text items): the folder, the adapter's ``"text"`` sources (text encoder and
    tokenizer files), ``model.weight_dtype`` and ``CACHE_FORMAT``.
- a clip (``clip_key``): the video fingerprint, the media file (path relative to the dataset root
  when inside it, so a moved dataset keeps its cache; size; mtime_ns), its media type, and the
  clip exactly as the loader resolves it for one (sample, batch): bucket height/width, frame
  count, the source frame indices (moving clips) or the static frame index, and the flip.
  Keying on the *resolved* clip rather than on the raw settings means every data setting that
  changes pixels (clip_mode, static_frame, image/video_sample_size, video_sample_n_frames,
  stride, fps, bucketing, random_hw_adapt, token budget, flips, seed) changes the key exactly
  when it changes the clip, and settings that do not (text_drop_ratio, workers, timeouts) never
  force a re-encode.
- a text (``text_key``): the text fingerprint and the caption string.
- a shared conditioning item (``shared_key``, e.g. the all-masked one): the video fingerprint,
  the item name and the pixel shape (it does not depend on the sample).

Bump ``CACHE_FORMAT`` whenever the decode/resize/normalise code or the tensors stored change.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_FORMAT = 1
KEY_CHARS = 32  # 128-bit keys: collisions are not a practical concern


def digest(obj: object) -> str:
    """Stable short hash of a JSON-serialisable object."""
    payload = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:KEY_CHARS]


def _file_facts(folder: Path, suffixes: tuple[str, ...] | None = None) -> list[list]:
    """[name, size, mtime_ns] of the files directly in ``folder`` (sorted; [] when absent)."""
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and (suffixes is None or p.name.endswith(suffixes)):
            st = p.stat()
            out.append([p.name, st.st_size, st.st_mtime_ns])
    return out


def _text_of(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


@dataclass(frozen=True)
class Fingerprints:
    video: str
    text: str


def model_fingerprints(model_path: str | os.PathLike, weight_dtype: str, adapter: Any = None) -> Fingerprints:
    """Fingerprints of the encoders the cache depends on (see module doc); reads no weights.
    `adapter`: the folder's adapter class when the caller already detected it."""
    root = Path(model_path).resolve()
    if adapter is None:
        from ufo_video.models.registry import adapter_for

        adapter = adapter_for(root)
    common = {"format": CACHE_FORMAT, "model": str(root), "dtype": weight_dtype}
    sources = adapter.fingerprint_sources(root)

    def facts(entries: dict) -> dict:
        out = {}
        for name, (kind, path, *rest) in entries.items():
            out[name] = _text_of(path) if kind == "text" else _file_facts(path, rest[0] if rest else None)
        return out

    video = digest({**common, **facts(sources["video"])})
    text = digest({**common, **facts(sources["text"])})
    return Fingerprints(video=video, text=text)


def media_facts(path: Path, root: Path) -> tuple[str, int, int]:
    """(path relative to the dataset root when inside it, else absolute; size; mtime_ns)."""
    st = path.stat()
    resolved = path.resolve()
    try:
        name = resolved.relative_to(root.resolve()).as_posix()
    except ValueError:
        name = str(resolved)
    return name, st.st_size, st.st_mtime_ns


def clip_key(video_fp: str, facts: tuple[str, int, int], media_type: str, spec: dict, frames: int) -> str:
    """Key of one resolved clip (``spec`` as ``TrainLoader._spec`` builds it; ``frames`` the
    clip's frame count after static expansion)."""
    clip = {"size": list(spec["size"]), "frames": frames, "flip": bool(spec.get("flip")),
            "indices": spec.get("indices"), "static_index": spec.get("static_index")}  # fmt: skip
    return digest({"v": video_fp, "media": list(facts), "type": media_type, "clip": clip})


def item_key(clip: str, item: str) -> str:
    """Key of one tensor of a clip: ``latent``, ``cond_first`` or ``cond_first_last``."""
    return f"{clip}.{item}"


def text_key(text_fp: str, text: str) -> str:
    return "t" + digest({"t": text_fp, "text": text})


def shared_key(video_fp: str, item: str, frames: int, height: int, width: int) -> str:
    """Key of a conditioning tensor that depends only on the clip size (e.g. ``cond_all``)."""
    return "a" + digest({"v": video_fp, item: [frames, height, width]})
