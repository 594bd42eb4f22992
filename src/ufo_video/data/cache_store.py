"""On-disk storage of the latent / text-embedding cache: safetensors shards plus one JSON index.

Layout of ``data.cache_dir`` (default ``<train_data_dir>/.ufo_cache``)::

    index.json        {"format", "items": {key: shard file}, "failures": {clip key: reason},
                       "lengths": {key: rows before trimming}, "shard_bytes": {shard file: size}}:
                      a snapshot
    index.log         one JSON line per shard written since the snapshot
                      {"shard", "bytes", "items", "lengths", "failures", "cleared"}: appended, O(1) per shard
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

Damaged shards: a shard can still be truncated or deleted afterwards (a full disk while copying
the folder, a user's cleanup). `damaged_shards` finds that cheaply, without reading tensors: each
shard the index names must exist and have the byte size recorded when it was written (indexes
from before sizes were recorded: at least the length its safetensors header declares). Training
checks it before the model loads; ``data cache`` drops the entries of such shards
(`drop_damaged`) and so encodes those items again.

Trailing zeros: a text embedding or mask whose trailing rows are all bit-for-bit zero (a mask's
padding, or an encoder that zeroes padded positions) is stored without them (kept to a multiple of
``TRIM_MULTIPLE`` rows so shapes stay few) and padded back with zeros on reading: bitwise the tensor
that was put. Rows that are not exactly zero (a text encoder's hidden states at padded positions,
which a transformer without a text mask does read) are kept: the cache never changes a value.
"""

from __future__ import annotations

import contextlib
import json
import os
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
TRIM_PREFIX = "text_"  # text conditioning kinds (`data.cache.text_kind`): trailing zero rows not stored
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


def shard_problem(path: Path, recorded: int | None) -> str | None:
    """None if the shard file looks whole, else what is wrong: missing; a size other than the
    `recorded` one; without a record, shorter than its safetensors header declares (8-byte header
    length, the JSON header, then the data up to the largest `data_offsets` end)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "is missing"
    if recorded is not None:
        return None if size == recorded else f"is {size} bytes, written as {recorded} (truncated or replaced)"
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 0 or n > size - 8:
                return f"is truncated ({size} bytes, shorter than its safetensors header)"
            header = json.loads(fh.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        return f"is unreadable ({exc})"
    need = 8 + n + end
    return None if size >= need else f"is truncated ({size} bytes, its header needs {need})"


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
        self.shard_bytes: dict[str, int] = {}  # shard file -> its size when written
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
        self.shard_bytes = {k: int(v) for k, v in data.get("shard_bytes", {}).items()}
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
            if "bytes" in rec:
                self.shard_bytes[rec["shard"]] = int(rec["bytes"])
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
                                "(it encodes the shard's entries again)") from None
            self._open[name] = handle
            if len(self._open) > MAX_OPEN_SHARDS:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(name)
        tensor = handle.get_tensor(key)
        return pad_rows(tensor, self.lengths[key]) if key in self.lengths else tensor

    def damaged_shards(self) -> dict[str, str]:
        """Shard file -> what is wrong with it (missing, or shorter than written), for every shard
        the index names; stat calls only, plus a header read where no size was recorded."""
        found = {}
        for name in sorted(set(self.items.values())):
            problem = shard_problem(self.shards / name, self.shard_bytes.get(name))
            if problem:
                found[name] = problem
        return found

    def keys_in(self, shards: set[str] | dict[str, str]) -> list[str]:
        return [k for k, v in self.items.items() if v in shards]

    def damage_message(self, damaged: dict[str, str], samples: list[str] | None = None) -> str:
        """One line naming the damaged shards, the entries they held (and, given, the samples of
        a run that use them) and what to run."""
        counts = {name: sum(1 for v in self.items.values() if v == name) for name in damaged}
        shown = "; ".join(f"{self.shards / n} {why} ({counts[n]} entries)" for n, why in list(damaged.items())[:3])
        more = f"; and {len(damaged) - 3} more shards" if len(damaged) > 3 else ""
        used = ""
        if samples:
            used = f" This run's samples in them ({len(samples)}): {', '.join(samples[:3])}{' ...' if len(samples) > 3 else ''}."
        return (
            f"latent cache {self.root}: {len(damaged)} shard(s) missing or damaged: {shown}{more}.{used} Run "
            "`ufo-video data cache CONFIG [key=value ...]` with this run's config: it drops these entries and encodes "
            "them again"
        )

    # ------------------------------------------------------------------ writing

    def drop_damaged(self) -> dict[str, tuple[str, int]]:
        """Forget the entries of missing or damaged shards (the index is rewritten at once, the
        damaged files deleted), so they count as not cached and are encoded again. Returns
        shard file -> (what was wrong, entries dropped)."""
        assert self.writable, "read-only cache"
        damaged = self.damaged_shards()
        if not damaged:
            return {}
        dropped = {name: (why, 0) for name, why in damaged.items()}
        for key in self.keys_in(damaged):
            name = self.items.pop(key)
            self.lengths.pop(key, None)
            dropped[name] = (dropped[name][0], dropped[name][1] + 1)
        for name in damaged:
            self.shard_bytes.pop(name, None)
            self._open.pop(name, None)
        self._compact()
        for name in damaged:
            (self.shards / name).unlink(missing_ok=True)
        return dropped

    @contextlib.contextmanager
    def locked(self):
        """Exclusive writer lock (released by the OS if the process dies; never held by the
        decode workers forked while it is held: `process.locks`)."""
        from ufo_video.process.locks import LockBusy, exclusive_lock

        self.root.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(exclusive_lock(self.root / ".lock", note=f"pid {os.getpid()}"))
            except LockBusy as busy:
                raise DataError(f"{self.root}: another `ufo-video data cache` is writing this cache ({busy.holder}); "
                                "wait for it to finish") from None
            if self.index_path.is_file():  # what a writer that finished while we waited has added
                self._load_index()
            yield self

    def put(self, key: str, kind: str, tensor: torch.Tensor) -> None:
        assert self.writable, "read-only cache"
        t = tensor.detach().to("cpu").contiguous().clone()
        if kind.startswith(TRIM_PREFIX):
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
        size = path.stat().st_size
        lengths = {k: self._pending_lengths.pop(k) for k in tensors if k in self._pending_lengths}
        for key in tensors:
            self.items[key] = name
        self.lengths.update(lengths)
        self.shard_bytes[name] = size
        self._unlogged.append({"shard": name, "bytes": size, "items": list(tensors), "lengths": lengths})

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
        used = set(self.items.values())
        sizes = {k: v for k, v in self.shard_bytes.items() if k in used}
        data = json.dumps({"format": CACHE_FORMAT, "items": self.items, "failures": self.failures,
                           "lengths": lengths, "shard_bytes": sizes}, separators=(",", ":")).encode("utf-8")
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
