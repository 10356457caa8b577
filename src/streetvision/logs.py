"""Logging for phase scripts: everything (including a traceback on failure) goes to the rule's log."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path


@contextlib.contextmanager
def log_to_file(path: str | Path, level: int = logging.INFO):
    """Send library logging to ``path`` and stderr; log the exception before re-raising it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handlers = [logging.FileHandler(path, mode="w"), logging.StreamHandler(sys.stderr)]
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        yield
    except BaseException:
        logging.getLogger("streetvision").exception("phase failed")
        raise
    finally:
        for handler in handlers:
            handler.flush()
