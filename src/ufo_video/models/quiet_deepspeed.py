"""Import DeepSpeed (when installed) without its "Setting accelerator to CPU" warning.

Writing a tiny model calls transformers' `save_pretrained`, whose unwrap step (accelerate's
`extract_model_from_parallel`) imports DeepSpeed whenever it is installed; on a machine without
a GPU DeepSpeed's import then logs "[WARNING] [real_accelerator.py:...] Setting accelerator to
CPU ...", noise for `model make-tiny`, which never uses DeepSpeed. `DS_ACCELERATOR=cpu` would
also silence it, but an environment variable is inherited by every child process (a training the
web app starts on a GPU), so instead that one message is filtered out of DeepSpeed's logger for
the import alone: the accelerator DeepSpeed picks, and every later message, are unchanged.
"""

from __future__ import annotations

import importlib.util
import logging
import sys

NOTICE = "Setting accelerator to CPU"


class _DropCpuNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return NOTICE not in record.getMessage()


def import_deepspeed_quietly() -> None:
    """Import DeepSpeed now, its CPU-fallback notice dropped; nothing when it is absent or imported."""
    if "deepspeed" in sys.modules or importlib.util.find_spec("deepspeed") is None:
        return
    logger = logging.getLogger("DeepSpeed")  # the logger DeepSpeed creates (and configures) at import
    notice_filter = _DropCpuNotice()
    logger.addFilter(notice_filter)
    try:
        import deepspeed  # noqa: F401
    finally:
        logger.removeFilter(notice_filter)
