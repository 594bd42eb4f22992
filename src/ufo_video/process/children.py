"""Children end with their parent, however the parent ended.

A parent killed with ``kill -9`` runs no cleanup, so its children have to notice by themselves.
Linux's ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, not the
process; the decode pool re-forks workers from whichever thread asks it, so a worker could be
killed while its parent lives. Each child therefore polls ``os.getppid()`` from a daemon thread:
once the parent is gone the child is reparented and the pid changes. The poll is a syscall every
`POLL_S` seconds.

- `exit_with_parent()`: for forked workers; the child exits at once (it owns nothing to save).
- `child_env()` / `watch_parent_from_env()`: for a command run as a subprocess (the UI's
  training): the parent passes its pid in the environment and the child, on its parent's death,
  signals itself SIGTERM, so it stops the way a user's stop does (a training saves a checkpoint
  at the next step boundary) instead of running on unseen for hours.
"""

from __future__ import annotations

import os
import signal
import threading
import time

POLL_S = 0.5
PARENT_ENV = "UFO_VIDEO_PARENT_PID"


def _watch(parent: int, on_death) -> None:
    def loop() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_S)
        on_death()

    threading.Thread(target=loop, name="ufo-parent-watch", daemon=True).start()


def exit_with_parent(parent: int) -> None:
    """In a forked child: exit (status 1, no cleanup) as soon as `parent` is no longer the parent."""
    if os.getppid() != parent:  # died between the fork and now
        os._exit(1)
    _watch(parent, lambda: os._exit(1))


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this environment) plus this process's pid as the watched parent."""
    out = dict(os.environ if env is None else env)
    out[PARENT_ENV] = str(os.getpid())
    return out


def watch_parent_from_env() -> bool:
    """Called at a command's start: when started by `child_env` (and that process is still our
    parent), SIGTERM ourselves once it dies. The variable is removed so our own children do not
    watch a process that is not their parent. True when watching."""
    text = os.environ.pop(PARENT_ENV, None)
    if not text:
        return False
    try:
        parent = int(text)
    except ValueError:
        return False
    if os.getppid() != parent:  # it died before we started (we were reparented), or a copied environment
        if not _alive(parent):
            os.kill(os.getpid(), signal.SIGTERM)
            return True
        return False
    _watch(parent, lambda: os.kill(os.getpid(), signal.SIGTERM))
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
