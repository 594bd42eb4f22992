"""On-disk storage of the latent / text-embedding cache: safetensors shards plus one JSON index.

Layout of ``data.cache_dir`` (default ``<train_data_dir>/.ufo_cache``)::

    index.json        {"format", "items": {key: shard file}, "failures": {clip key: reason},
                       "lengths": {key: rows before trimming}}: a snapshot
    index.log         one JSON line per shard written since the snapshot
                      {"shard", "items", "lengths", "failures", "cleared"}: appended, O(1) per shard
    shards/<kind>-<shape>-<dtype>-<run>-<n>.safetensors
                      e.g. latent-4x2x4x4-bfloat16-1a2b3c4d-0003.safetensors: every tensor in a
                      shard has that kind, shape and dtype, and is named by its key
    .lock             held (flock) while ``ufo-video data cache`` writes

Why this shape: shards are immutable once written (new results go to new shards), so a crash
can at worst leave an unreferenced shard behind, never a half-written tensor that the index
points at. Shards are written atomically (temp file + fsync + rename) before the index line that
names them; a line is appended and fsynced (a torn last line, from a crash, is ignored: its shard is
simply unreferenced). The snapshot is rewritten (atomically, then the log emptied; replaying a
line twice is harmless) only when the log outgrows it, so the index costs O(1) bytes per shard
amortised, not a rewrite of every item per shard. Tensors are read lazily through ``safe_open``.

Trailing zeros: a text embedding or mask whose trailing rows are all bit-for-bit zero (a mask's
padding, or an encoder that zeroes padded positions) is stored without them (kept to a multiple of
``TRIM_MULTIPLE`` rows so shapes stay few) and padded back with zeros on reading: bitwise the tensor
that was put. Rows that are not exactly zero (a text encoder's hidden states at padded positions,
which a transformer without a text mask does read) are kept: the cache never changes a value.
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

from ufo_video.atomic import DiskFullError, append_line, fsync_dir, save_safetensors_atomic, write_bytes_atomic
from ufo_video.data.cache_keys import CACHE_FORMAT
from ufo_video.errors import DataError

SHARD_BYTES = 256 * 1024 * 1024  # a shard is written when its buffered tensors reach this size
FLUSH_SECONDS = 300.0  # ...or at least this often, so an interrupted run loses little work
MAX_OPEN_SHARDS = 64
TRIM_KINDS = ("text_embeds", "text_mask")
TRIM_MULTIPLE = 16
MIN_COMPACT_BYTES = 1024 * 1024  # the log is folded into the snapshot once it is larger than both


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def trim_trailing_zeros(t: torch.Tensor, multiple: int = TRIM_MULTIPLE) -> torch.Tensor:
    """`t` without its trailing dim-0 rows whose bytes are all zero (-0.0 is not zero here),
    keeping a multiple of `multiple` rows (or all of them)."""
    if t.ndim == 0 or t.shape[0] == 0:
        return t
    rows = t.reshape(t.shape[0], -1).contiguous().view(torch.uint8).any(dim=1)
    nonzero = torch.nonzero(rows)
    keep = int(nonzero[-1]) + 1 if len(nonzero) else 0
    keep = min(t.shape[0], -(-keep // multiple) * multiple)
    return t[:keep].clone() if keep < t.shape[0] else t


def pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """Undo `trim_trailing_zeros`: zero rows appended up to `rows`."""
    if t.shape[0] >= rows:
        return t
    return torch.cat([t, t.new_zeros((rows - t.shape[0], *t.shape[1:]))])


class CacheStore:
    """The index and shards of one cache folder; ``writable`` stores buffer tensors with ``put``."""

    def __init__(self, root: Path, *, writable: bool) -> None:
        self.root, self.writable = Path(root), writable
        self.shards = self.root / "shards"
        self.index_path = self.root / "index.json"
        self.log_path = self.root / "index.log"
        self.items: dict[str, str] = {}
        self.failures: dict[str, str] = {}
        self.lengths: dict[str, int] = {}  # key -> rows before trimming (trimmed tensors only)
        self._persisted_failures: dict[str, str] = {}
        self._snapshot_bytes = 0
        self._log_bytes = 0
        self._fresh = False  # a snapshot of another format: the first write starts a new one
        self._pending: dict[tuple, dict[str, torch.Tensor]] = {}
        self._pending_lengths: dict[str, int] = {}
        self._unlogged: list[dict] = []
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
            raw = self.index_path.read_bytes()
            data = json.loads(raw)
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{self.index_path}: unreadable cache index ({exc}); delete the folder "
                            f"{self.root} and run `ufo-video data cache` again") from None
        if data.get("format") != CACHE_FORMAT:
            if not self.writable:
                raise DataError(f"{self.index_path}: cache format {data.get('format')} is not the current "
                                f"{CACHE_FORMAT}; run `ufo-video data cache CONFIG` to rebuild it")
            self._fresh = True
            return  # a writer starts a fresh index; stale shards go with --prune
        self.items = dict(data.get("items", {}))
        self.failures = dict(data.get("failures", {}))
        self.lengths = {k: int(v) for k, v in data.get("lengths", {}).items()}
        self._snapshot_bytes, self._log_bytes = len(raw), 0
        self._replay_log()
        self._persisted_failures = dict(self.failures)

    def _replay_log(self) -> None:
        """Apply the lines appended since the snapshot; a torn last line (a crash mid-append) is skipped."""
        try:
            raw = self.log_path.read_bytes()
        except FileNotFoundError:
            return
        self._log_bytes = len(raw)
        lines = raw.split(b"\n")
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines) - 1:  # no newline after it: the append did not finish
                    continue
                raise DataError(f"{self.log_path}: line {n + 1} is corrupt; delete the folder {self.root} and run "
                                "`ufo-video data cache` again") from None
            for key in rec.get("items", []):
                self.items[key] = rec["shard"]
            self.lengths.update({k: int(v) for k, v in rec.get("lengths", {}).items()})
            self.failures.update(rec.get("failures", {}))
            for key in rec.get("cleared", []):
                self.failures.pop(key, None)

    # ------------------------------------------------------------------ reading

    def has(self, key: str) -> bool:
        return key in self.items or any(key in group for group in self._pending.values())

    def get(self, key: str) -> torch.Tensor:
        for group in self._pending.values():
            if key in group:
                return pad_rows(group[key], self._pending_lengths[key]) if key in self._pending_lengths else group[key]
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
        tensor = handle.get_tensor(key)
        return pad_rows(tensor, self.lengths[key]) if key in self.lengths else tensor

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
        if kind in TRIM_KINDS:
            trimmed = trim_trailing_zeros(t)
            if trimmed.shape[0] < t.shape[0]:
                self._pending_lengths[key] = t.shape[0]
                t = trimmed
            else:
                self.lengths.pop(key, None)
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
        lengths = {k: self._pending_lengths.pop(k) for k in tensors if k in self._pending_lengths}
        for key in tensors:
            self.items[key] = name
        self.lengths.update(lengths)
        self._unlogged.append({"shard": name, "items": list(tensors), "lengths": lengths})

    def _write_index(self) -> None:
        """Append one line per shard written since the last call (plus failure changes), or fold
        everything into a new snapshot when the log has outgrown it (amortised O(1) per shard)."""
        fsync_dir(self.shards)
        added = {k: v for k, v in self.failures.items() if self._persisted_failures.get(k) != v}
        cleared = [k for k in self._persisted_failures if k not in self.failures]
        records = self._unlogged or ([{}] if added or cleared else [])
        if records:
            records[-1] = {**records[-1], "failures": added, "cleared": cleared}
        payload = b"".join(json.dumps(r, separators=(",", ":")).encode("utf-8") + b"\n" for r in records)
        if self._fresh or not self.index_path.is_file() or \
                self._log_bytes + len(payload) > max(MIN_COMPACT_BYTES, self._snapshot_bytes):
            self._compact()
        elif payload:
            append_line(self.log_path, payload)  # all of it or nothing (a full disk cuts it back)
            self._log_bytes += len(payload)
        self._unlogged = []
        self._persisted_failures = dict(self.failures)
        self._last_flush = time.monotonic()

    def _compact(self) -> None:
        """A new snapshot of everything (atomic), then an empty log."""
        lengths = {k: v for k, v in self.lengths.items() if k in self.items}
        data = json.dumps({"format": CACHE_FORMAT, "items": self.items, "failures": self.failures,
                           "lengths": lengths}, separators=(",", ":")).encode("utf-8")
        write_bytes_atomic(self.index_path, data)
        write_bytes_atomic(self.log_path, b"")
        self._snapshot_bytes, self._log_bytes, self._fresh = len(data), 0, False

    def flush(self) -> None:
        """Write every buffered tensor to shards, then the index."""
        for group in list(self._pending):
            self._write_group(group)
        self._write_index()

    def keep_written(self) -> None:
        """After a full disk: index the shards already written (a few bytes, which may still fit)
        and drop the buffered tensors (a later run encodes them again), so the error the caller
        raises is the first one and what the index names is all complete."""
        self._pending.clear()
        self._pending_bytes.clear()
        self._pending_lengths.clear()
        try:
            self._write_index()
        except DiskFullError:
            # the index keeps its last state; the shards it does not name are complete but unused
            # (a later run writes them again; `data cache --prune` deletes them)
            for rec in self._unlogged:
                for key in rec["items"]:
                    self.items.pop(key, None)
            self._unlogged = []

    def prune(self, keep: set[str]) -> tuple[int, int]:
        """Forget index items not in ``keep`` and delete shards nothing refers to (and stray files).
        A shard holding any kept item stays whole. Returns (items forgotten, files deleted)."""
        self.flush()
        dropped = [k for k in self.items if k not in keep]
        for k in dropped:
            del self.items[k]
        self.failures = {k: v for k, v in self.failures.items() if k in keep}
        self.lengths = {k: v for k, v in self.lengths.items() if k in self.items}
        self._compact()
        self._persisted_failures = dict(self.failures)
        used = set(self.items.values())
        deleted = 0
        self._open.clear()
        for p in self.shards.iterdir():
            if p.is_file() and p.name not in used:
                p.unlink()
                deleted += 1
        return len(dropped), deleted
