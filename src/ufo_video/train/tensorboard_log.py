"""TensorBoard logging (`train.report_to = "tensorboard"`) that a full disk cannot turn into tracebacks.

TensorBoard writes its event file from a background thread. On a full disk that thread died with
a traceback, and every later `log` (and the writer's close at the end of the run) raised the same
error again in the training loop, so the run ended in a traceback instead of its one-line message.

What a user wants, decided here: TensorBoard is a view, `losses.jsonl` and the checkpoints are the
record. When the event file cannot be written, one warning says that logging to TensorBoard
stopped, and training goes on. If the disk really is full, the next record write (the loss line
of this very step, or the next checkpoint, normally in the same folder) stops the run cleanly
with the message that says which checkpoint is kept; if only the TensorBoard folder is affected
(another disk, a quota), hours of training are not thrown away for a chart. A full disk already
at start (before step 1, nothing to lose) is an error, like every other write.
"""

from __future__ import annotations

from pathlib import Path

from ufo_video.atomic import DISK_ERRNOS, DiskFullError, disk_errno, disk_errors


class _StopOnFullDisk:
    """Stands in for the event file's record writer, in TensorBoard's writer thread and in its
    flush/close: a full disk prints one warning, then everything further is dropped."""

    def __init__(self, inner, folder: str, log) -> None:
        self.inner, self.folder, self.log = inner, folder, log
        self.stopped = False

    def _call(self, name: str, *args) -> None:
        if self.stopped:
            if name == "close":  # release the file; its buffered bytes cannot be written anyway
                try:
                    self.inner.close()
                except Exception as exc:
                    if disk_errno(exc) is None:
                        raise
            return
        try:
            getattr(self.inner, name)(*args)
        except Exception as exc:
            code = disk_errno(exc)
            if code is None:
                raise
            self.stopped = True
            self.log(f"warning: {DISK_ERRNOS[code][0]} while writing the TensorBoard log in {self.folder}; logging "
                     "to TensorBoard stopped, training goes on (losses.jsonl still records every step)")

    def write(self, data) -> None:
        self._call("write", data)

    def flush(self) -> None:
        self._call("flush")

    def close(self) -> None:
        self._call("close")

    @property
    def closed(self) -> bool:
        return self.inner.closed


def guard(tracker, log=print) -> bool:
    """Put `_StopOnFullDisk` around the event file of accelerate's TensorBoard tracker. This
    reaches into TensorBoard's writer (torch SummaryWriter -> FileWriter -> EventFileWriter ->
    its async writer and thread); False when that shape is not found (tests check it is)."""
    writer = getattr(tracker, "writer", None)
    try:
        events = writer._get_file_writer().event_writer
        async_writer = events._async_writer
        thread = async_writer._worker
        inner = async_writer._writer
    except AttributeError:
        return False
    if isinstance(inner, _StopOnFullDisk):
        return True
    wrapped = _StopOnFullDisk(inner, str(writer.get_logdir()), log)
    async_writer._writer = thread._record_writer = wrapped
    return True


def start(run, config: dict) -> None:
    """`init_trackers` (a full disk here: one error line, no step was run), then the guard."""
    from ufo_video.train.checkpoint import kept_checkpoints

    acc = run.accelerator
    try:
        with disk_errors(Path(acc.logging_dir)):
            acc.init_trackers("ufo-train", config=config)
    except DiskFullError as exc:
        kept, rerun = kept_checkpoints(run.output_dir)
        raise exc.with_context(f"no step of this start was run; {kept}", rerun) from exc.__cause__
    if acc.is_main_process:
        for tracker in acc.trackers:
            if getattr(tracker, "name", None) == "tensorboard":
                guard(tracker)
