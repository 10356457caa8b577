"""Training curves that survive a resume: the CSV of every logged metric, written atomically.

Lightning's own CSVLogger loses or breaks on the rows of an interrupted run: a new process starts with an
empty header, and its first save rewrites the file with the keys it has seen so far, which fails
(``dict contains fields not in fieldnames``) when the run resumes mid-epoch. ``CurvesLogger`` instead
reads the rows already on disk, keeps those logged before the step training resumes from (the rest will
be logged again), and rewrites the whole file atomically, so a kill can never tear it.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from streetvision.io.atomic import atomic_write_text

METRICS_FILE = "metrics.csv"
SAVE_EVERY_S = 5.0  # step-level rows are written at most this often; epoch-level rows at once


def read_rows(path: Path) -> list[dict]:
    """The rows of a metrics file (values as floats, empty cells dropped); [] when there is none."""
    if not path.is_file():
        return []
    rows = []
    for raw in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))):
        try:
            rows.append({key: float(value) for key, value in raw.items() if key and value not in ("", None)})
        except ValueError:  # not a number: not a row this logger wrote
            continue
    return rows


class CurvesLogger(Logger):
    """Every logged metric in ``<save_dir>/<name>/metrics.csv`` (columns epoch, step, then the metrics)."""

    def __init__(self, save_dir: str | Path, name: str):
        super().__init__()
        self._save_dir, self._name = Path(save_dir), name
        self.rows: list[dict] = []
        self._loaded, self._last_save = False, 0.0

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self._save_dir)

    @property
    def log_dir(self) -> str:
        return str(self._save_dir / self._name)

    @property
    def path(self) -> Path:
        return self._save_dir / self._name / METRICS_FILE

    @rank_zero_only
    def resume_from(self, step: int) -> None:
        """Keep the rows logged before ``step`` (the resumed checkpoint's global step; 0 = a fresh start)."""
        self.rows = [row for row in read_rows(self.path) if row.get("step", 0) < step]
        self._loaded = True
        self._write()

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass  # the phase manifest records the config

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not self._loaded:  # not told where training resumes: keep what is on disk
            self.rows, self._loaded = read_rows(self.path), True
        self.rows.append({**{k: float(v) for k, v in metrics.items()}, "step": float(step or 0)})
        epoch_level = any(key.startswith("val") or key.endswith("_epoch") for key in metrics)
        if epoch_level or time.monotonic() - self._last_save >= SAVE_EVERY_S:
            self._write()

    @rank_zero_only
    def save(self) -> None:
        pass  # log_metrics decides when to write (Lightning calls save after every log)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._loaded:
            self._write()

    def _write(self) -> None:
        keys = sorted({key for row in self.rows for key in row} - {"epoch", "step"})
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["epoch", "step", *keys], lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: (int(v) if k in ("epoch", "step") else v) for k, v in row.items()})
        atomic_write_text(self.path, out.getvalue())
        self._last_save = time.monotonic()
