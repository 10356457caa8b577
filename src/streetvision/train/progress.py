"""Progress lines of a training step (``train.progress_interval_s``; see ``streetvision.progress``).

In the log, every interval and at each epoch end::

    baseline demo: epoch 3/8, step 14/40, 212 img/s, ETA 0:01:05, loss 0.4213, val_select MCC 0.612

and on the console one short line per epoch. Rank 0 only (under DDP the images/s counts every rank).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from lightning.pytorch.callbacks import Callback

from streetvision.progress import CONSOLE_PROGRESS_LOGGER, PROGRESS_LOGGER, Rate, Throttle, format_duration
from streetvision.train.batches import batch_size


class TrainingProgress(Callback):
    """``label`` names the job (``"baseline demo"``); ``loss`` and ``score`` are the logged metric names
    shown (``score`` None: none, e.g. ExPLoRA, which has no validation)."""

    def __init__(self, label: str, interval_s: float, *, loss: str, score: str | None = None,
                 score_name: str = "", clock: Callable[[], float] = time.monotonic):
        self.label, self.interval_s, self.loss, self.score = label, interval_s, loss, score
        self.score_name = score_name or (score or "")
        self.clock = clock
        self.rate: Rate | None = None
        self.throttle: Throttle | None = None
        self._first_step = 0
        self.file_log = logging.getLogger(PROGRESS_LOGGER)
        self.console_log = logging.getLogger(CONSOLE_PROGRESS_LOGGER)

    def on_train_start(self, trainer, pl_module):
        self.rate, self.throttle = Rate(self.clock), Throttle(self.interval_s, self.clock)
        self._first_step = trainer.global_step  # a resumed run: its rate counts from here

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rate.add(batch_size(batch) * trainer.world_size)
        if self.throttle.due() and trainer.is_global_zero:
            self.file_log.info("%s", self.line(trainer))

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        self.file_log.info("%s", self.line(trainer, epoch_end=True))
        self.console_log.info("%s", self.console_line(trainer))

    # ------------------------------------------------------------ the lines

    def _metric(self, trainer, name: str | None, epoch_end: bool) -> float | None:
        """The latest value of a logged metric: its epoch mean at an epoch's end, else its last step."""
        if name is None:
            return None
        metrics = trainer.callback_metrics
        preferred = f"{name}_epoch" if epoch_end else f"{name}_step"
        value = metrics.get(preferred, metrics.get(name))
        return float(value) if value is not None else None

    def _eta_s(self, trainer) -> float | None:
        """Training time left at this process's pace so far (its optimiser steps, validation included)."""
        total, stepped = self._total_steps(trainer), trainer.global_step - self._first_step
        if total is None or stepped <= 0:
            return None
        return (total - trainer.global_step) * (self.clock() - self.rate.started) / stepped

    @staticmethod
    def _epoch(trainer) -> str:
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        return f"epoch {trainer.current_epoch + 1}/{epochs}"  # the running one; at its end, the one done

    @staticmethod
    def _total_steps(trainer) -> int | None:
        total = trainer.estimated_stepping_batches
        return None if total in (None, float("inf")) else int(total)

    def line(self, trainer, epoch_end: bool = False) -> str:
        total, rate = self._total_steps(trainer), self.rate.per_second()
        parts = [self._epoch(trainer), f"step {trainer.global_step}/{total if total is not None else '?'}",
                 f"{rate:.1f} img/s" if rate else "? img/s", f"ETA {format_duration(self._eta_s(trainer))}",
                 self._shown("loss", self._metric(trainer, self.loss, epoch_end), ".4f")]
        if self.score:
            parts.append(self._shown(self.score_name, self._metric(trainer, self.score, epoch_end), ".3f"))
        return f"{self.label}: " + ", ".join(parts)

    def console_line(self, trainer) -> str:
        parts = [self._epoch(trainer)]
        if self.score:
            parts.append(self._shown(self.score_name, self._metric(trainer, self.score, True), ".3f"))
        parts.append(f"ETA {format_duration(self._eta_s(trainer))}")
        return f"{self.label}: " + ", ".join(parts)

    @staticmethod
    def _shown(name: str, value: float | None, spec: str) -> str:
        return f"{name} {value:{spec}}" if value is not None else f"{name} ?"
