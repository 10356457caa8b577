"""Logging for the steps: everything goes to the rule's log file; the console gets one line per step.

Inside ``log_to_file`` the process's stdout and stderr (file descriptors 1 and 2, so C-level output and
DDP child processes too) point at the rule's log file: library chatter such as Lightning's tips, progress
and third-party deprecation warnings lands there only. The console (the job's original stderr) shows
the step's result line (``log_result``), one progress line per training epoch (``streetvision.progress``),
streetvision's own warnings, and errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

from streetvision.progress import CONSOLE_PROGRESS_LOGGER
from streetvision.runtime import process_rank

RESULT_LOGGER = "streetvision.result"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_result(step: str, experiment: str, message: str) -> None:
    """The one line a step shows on the console, e.g. ``baseline demo: val_test MCC 0.909``."""
    logging.getLogger(RESULT_LOGGER).info("%s %s: %s", step, experiment, message)


_PLAIN_ON_CONSOLE = (RESULT_LOGGER, CONSOLE_PROGRESS_LOGGER)  # shown as they are: "<step> <experiment>: ..."


class _ConsoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name in _PLAIN_ON_CONSOLE:
            return True
        if record.levelno >= logging.ERROR:
            return True
        return record.levelno >= logging.WARNING and record.name.startswith("streetvision")


class _ConsoleFormatter(logging.Formatter):
    """One line, no traceback (Python prints that once, when the error leaves the script)."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name in _PLAIN_ON_CONSOLE:
            return record.getMessage()
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _starts_the_step(environ=os.environ) -> bool:
    """True unless this process is a rank started by a launcher after the step began: the tasks of a
    multi-task srun step (started by the step's first process, which already emptied the log) and
    torchrun's workers start together, so rank 0 emptying the file could erase another rank's first lines.
    """
    srun_task = "SLURM_STEP_ID" in environ and environ.get("SLURM_NTASKS", "1") != "1"
    return process_rank() == 0 and not srun_task and "TORCHELASTIC_RUN_ID" not in environ


@contextlib.contextmanager
def log_to_file(path: str | Path, level: int = logging.INFO):
    """Route this process's logging, warnings and raw output to ``path`` (see module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # DDP ranks run the same script and share the file, in append mode (O_APPEND) so that no process
    # overwrites another's lines at its own file offset. Only the process that starts the step empties it.
    if _starts_the_step():
        path.write_text("")
    log_file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    console = open(os.dup(saved[2]), "w", buffering=1, encoding="utf-8", closefd=True)  # noqa: SIM115
    for fd in (1, 2):
        os.dup2(log_file.fileno(), fd)
    to_file = logging.StreamHandler(log_file)
    to_file.setFormatter(logging.Formatter(FILE_FORMAT))
    to_console = logging.StreamHandler(console)
    to_console.addFilter(_ConsoleFilter())
    to_console.setFormatter(_ConsoleFormatter())
    logging.basicConfig(level=level, handlers=[to_file, to_console], force=True)
    logging.captureWarnings(True)
    try:
        yield
    except BaseException:
        logging.getLogger("streetvision").exception("step failed (full traceback in %s)", path)
        raise
    finally:
        logging.captureWarnings(False)
        for handler in (to_file, to_console):
            handler.flush()
            logging.getLogger().removeHandler(handler)
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, original in saved.items():
            os.dup2(original, fd)
            os.close(original)
        console.close()
        log_file.close()
