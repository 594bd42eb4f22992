"""On-disk storage of the latent / text-embedding cache: safetensors shards plus one JSON index.

Layout of ``data.cache_dir`` (default ``<train_data_dir>/.ufo_cache``)::

    index.json        {"format", "items": {key: shard file}, "failures": {clip key: reason}}
    shards/<kind>-<shape>-<dtype>-<run>-<n>.safetensors
                      e.g. latent-4x2x4x4-bfloat16-1a2b3c4d-0003.safetensors: every tensor in a
                      shard has that kind, shape and dtype, and is named by its key
    .lock             held (flock) while ``ufo-video data cache`` writes

Why this shape: shards are immutable once written (new results go to new shards), so a crash
can at worst leave an unreferenced shard behind, never a half-written tensor that the index
points at. Shards and the index are written atomically (temp file + fsync + rename), the index
after the shards it names. Tensors are read lazily through memory-mapped ``safe_open``.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ufo_video.atomic import fsync_dir, save_safetensors_atomic, write_bytes_atomic
from ufo_video.data.cache_keys import CACHE_FORMAT
from ufo_video.errors import DataError

SHARD_BYTES = 256 * 1024 * 1024  # a shard is written when its buffered tensors reach this size
FLUSH_SECONDS = 300.0  # ...or at least this often, so an interrupted run loses little work
MAX_OPEN_SHARDS = 64


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


class CacheStore:
    """The index and shards of one cache folder; ``writable`` stores buffer tensors with ``put``."""

    def __init__(self, root: Path, *, writable: bool) -> None:
        self.root, self.writable = Path(root), writable
        self.shards = self.root / "shards"
        self.index_path = self.root / "index.json"
        self.items: dict[str, str] = {}
        self.failures: dict[str, str] = {}
        self._pending: dict[tuple, dict[str, torch.Tensor]] = {}
        self._pending_bytes: dict[tuple, int] = {}
        self._last_flush = time.monotonic()
        self._run = uuid.uuid4().hex[:8]
        self._serial = 0
        self._open: OrderedDict[str, object] = OrderedDict()
        if self.index_path.is_file():
            self._load_index()
        elif not writable:
            raise DataError(f"no latent cache at {self.root} (no index.json): run `ufo-video data cache CONFIG` "
                            "with the training config first, or set data.cache_latents=false")
        if writable:
            self.shards.mkdir(parents=True, exist_ok=True)

    def _load_index(self) -> None:
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{self.index_path}: unreadable cache index ({exc}); delete the folder "
                            f"{self.root} and run `ufo-video data cache` again") from None
        if data.get("format") != CACHE_FORMAT:
            if not self.writable:
                raise DataError(f"{self.index_path}: cache format {data.get('format')} is not the current "
                                f"{CACHE_FORMAT}; run `ufo-video data cache CONFIG` to rebuild it")
            return  # a writer starts a fresh index; stale shards go with --prune
        self.items = dict(data.get("items", {}))
        self.failures = dict(data.get("failures", {}))

    # ------------------------------------------------------------------ reading

    def has(self, key: str) -> bool:
        return key in self.items or any(key in group for group in self._pending.values())

    def get(self, key: str) -> torch.Tensor:
        for group in self._pending.values():
            if key in group:
                return group[key]
        name = self.items[key]
        handle = self._open.get(name)
        if handle is None:
            path = self.shards / name
            try:
                handle = safe_open(str(path), framework="pt", device="cpu")
            except (OSError, SafetensorError) as exc:
                raise DataError(f"{path}: cache shard unreadable ({exc}); run `ufo-video data cache` again "
                                "(after deleting the shard)") from None
            self._open[name] = handle
            if len(self._open) > MAX_OPEN_SHARDS:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(name)
        return handle.get_tensor(key)

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def locked(self):
        """Exclusive writer lock (released by the OS if the process dies)."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DataError(f"{self.root}: another `ufo-video data cache` is writing this cache; wait for it "
                                "to finish") from None
            if self.index_path.is_file():  # what a writer that finished while we waited has added
                self._load_index()
            try:
                yield self
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def put(self, key: str, kind: str, tensor: torch.Tensor) -> None:
        assert self.writable, "read-only cache"
        t = tensor.detach().to("cpu").contiguous().clone()
        group = (kind, tuple(t.shape), _dtype_name(t))
        self._pending.setdefault(group, {})[key] = t
        self._pending_bytes[group] = self._pending_bytes.get(group, 0) + t.numel() * t.element_size()
        if self._pending_bytes[group] >= SHARD_BYTES:
            self._write_group(group)
            self._write_index()
        elif time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def record_failure(self, clip: str, reason: str) -> None:
        self.failures[clip] = reason

    def _write_group(self, group: tuple) -> None:
        tensors = self._pending.pop(group)
        self._pending_bytes.pop(group, None)
        kind, shape, dtype = group
        self._serial += 1
        name = f"{kind}-{'x'.join(map(str, shape)) or 'scalar'}-{dtype}-{self._run}-{self._serial:04d}.safetensors"
        path = self.shards / name
        save_safetensors_atomic(path, tensors, metadata={"format": str(CACHE_FORMAT), "kind": kind})
        for key in tensors:
            self.items[key] = name

    def _write_index(self) -> None:
        fsync_dir(self.shards)
        payload = {"format": CACHE_FORMAT, "items": self.items, "failures": self.failures}
        write_bytes_atomic(self.index_path, json.dumps(payload, separators=(",", ":")).encode("utf-8"))
        self._last_flush = time.monotonic()

    def flush(self) -> None:
        """Write every buffered tensor to shards, then the index."""
        for group in list(self._pending):
            self._write_group(group)
        self._write_index()

    def prune(self, keep: set[str]) -> tuple[int, int]:
        """Forget index items not in ``keep`` and delete shards nothing refers to (and stray files).
        A shard holding any kept item stays whole. Returns (items forgotten, files deleted)."""
        self.flush()
        dropped = [k for k in self.items if k not in keep]
        for k in dropped:
            del self.items[k]
        self.failures = {k: v for k, v in self.failures.items() if k in keep}
        self._write_index()
        used = set(self.items.values())
        deleted = 0
        self._open.clear()
        for p in self.shards.iterdir():
            if p.is_file() and p.name not in used:
                p.unlink()
                deleted += 1
        return len(dropped), deleted
