"""What the page's tabs share, below `app` (which builds the tabs) so that no tab imports `app`.

`DEVICE` is the one queue slot every device job takes (see `app`); `UiContext` holds the default
model, the output folder, the folders typed paths may name, the one kept model and the Train tab's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ufo_video.ui.session import ModelSession

DEVICE = {"concurrency_id": "device", "concurrency_limit": 1}


@dataclass
class UiContext:
    """What every tab shares: the default model, the output folder and the one loaded model."""

    model: str
    out_dir: Path
    allowed: tuple[Path, ...] | None = None  # folders typed paths must lie in (resolved); None: any
    session: ModelSession = field(default_factory=ModelSession)
    train_job: Any = None  # the Train tab's `TrainJob`
    threads: int | None = None  # torch's CPU threads in this process

    def device_free(self) -> None:
        """Jobs use the device one at a time; a training started from the page is one of them."""
        from ufo_video.errors import UfoError

        job = self.train_job
        if job is not None and job.running():
            raise UfoError(f"the device is busy with the training started in the Train tab (output_dir {job.output_dir}); "
                           "stop it there or wait for it to finish")  # fmt: skip

    def confine(self, path: Path, name: str) -> Path:
        """`path` if the app may read it, else a UfoError naming `name` and `--allow-dir`."""
        from ufo_video.ui.inputs import confine

        return confine(path, name, self.allowed)

    def folder(self, name: str) -> Path:
        path = self.out_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path
