"""Progress lines for long steps (training, synthesize): done/total, items per second and an ETA.

A job's stderr goes to its log file (``logs.log_to_file``), so no progress bar is drawn anywhere. Instead a
step writes a line to its log at most every ``progress_interval_s`` seconds, and the few lines that mark a
milestone (an epoch's end) also go to the console (``CONSOLE_PROGRESS_LOGGER``): one short line per epoch
per job stays readable with several jobs running side by side.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

PROGRESS_LOGGER = "streetvision.progress"  # the log file only
CONSOLE_PROGRESS_LOGGER = "streetvision.progress.console"  # the log file and the console (logs.py)


def format_duration(seconds: float | None) -> str:
    """``1:02:03`` (h:mm:ss); ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class Rate:
    """Items per second since ``start`` (this process's work: a resumed run counts from its restart) and the
    time the ``remaining`` items need at that rate."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.started = clock()
        self.items = 0

    def add(self, items: int) -> None:
        self.items += items

    def per_second(self) -> float | None:
        elapsed = self.clock() - self.started
        return self.items / elapsed if elapsed > 0 and self.items else None

    def eta_s(self, remaining: float) -> float | None:
        rate = self.per_second()
        return remaining / rate if rate else None


class Throttle:
    """True at most once per ``interval_s`` (the first call waits a whole interval)."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic):
        self.interval_s, self.clock = interval_s, clock
        self.last = clock()

    def due(self) -> bool:
        now = self.clock()
        if now - self.last >= self.interval_s:
            self.last = now
            return True
        return False


class ItemProgress:
    """``<what>: 12/40 images (30 %), 0.8 images/s, ETA 0:00:35``: a line every ``interval_s`` and after
    the last item. ``done_before`` counts items finished by an earlier, interrupted run (journals)."""

    def __init__(self, what: str, total: int, interval_s: float, *, done_before: int = 0,
                 unit: str = "images", clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger | None = None):
        self.what, self.total, self.unit = what, total, unit
        self.done = done_before
        self.rate, self.throttle = Rate(clock), Throttle(interval_s, clock)
        self.log = logger or logging.getLogger(PROGRESS_LOGGER)

    def advance(self, items: int = 1) -> None:
        self.done += items
        self.rate.add(items)
        if self.throttle.due() or self.done >= self.total:
            self.log.info("%s", self.line())

    def line(self) -> str:
        rate = self.rate.per_second()
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        speed = f"{rate:.3g} {self.unit}/s" if rate else f"? {self.unit}/s"
        return (f"{self.what}: {self.done}/{self.total} {self.unit}{share}, {speed}, "
                f"ETA {format_duration(self.rate.eta_s(self.total - self.done))}")
