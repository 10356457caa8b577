"""Experiment trackers of the training steps: ``train.loggers`` (``explora.loggers``) through Lightning.

``csv`` is always on (it makes the phase's ``curves.csv``); ``tensorboard``, ``mlflow`` and ``wandb`` are
Lightning's own loggers, from the optional ``.[tracking]`` extra: a tracker listed but not installed stops
the step before training, naming the key (never a quiet run without it). Every run is tagged with the
experiment, the step, the config hash (the manifest's) and the git commit, and ends with the phase's
headline metrics (``log_headline``). A run killed and resumed continues its MLflow / W&B run: the run ids
(with the MLflow store each is in) are kept beside the checkpoints (``tracking_runs.json``) and removed with
them when the config changes. Only rank 0 of a distributed run opens trackers.

- MLflow: ``mlflow_tracking_uri`` (null = ``sqlite:///<results>/mlflow.db``, artifacts in
  ``<results>/mlartifacts``; runs are created under ``<db>.lock``), experiment ``streetvision``, run name
  ``<experiment>/<step>``.
- W&B: project ``streetvision``, offline (files under the phase's ``wandb/``) unless ``WANDB_MODE`` is set.
- TensorBoard: the phase's ``tensorboard/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from streetvision.config import ConfigError
from streetvision.io.atomic import atomic_write_json
from streetvision.io.hashing import config_hash
from streetvision.io.manifest import git_state
from streetvision.layout import LOCK_SUFFIX, MLFLOW_ARTIFACTS, MLFLOW_DB, Training
from streetvision.runtime import process_rank

log = logging.getLogger(__name__)

CSV = "csv"
# logger -> the packages it needs (MLflow's SQLite store runs on SQLAlchemy and Alembic)
TRACKERS = {"tensorboard": ("tensorboard",), "mlflow": ("mlflow", "sqlalchemy", "alembic"),
            "wandb": ("wandb",)}
PROJECT = "streetvision"  # the MLflow experiment and W&B project every run goes to
# Keys that change how a run is watched or how fast it steps, not what it trains: a change resumes the
# same training (compile keeps the module's parameter names, so its checkpoints load either way).
OBSERVATION_KEYS = ("loggers", "mlflow_tracking_uri", "progress_interval_s", "compile")


@dataclass(frozen=True)
class TrackingSettings:
    loggers: tuple[str, ...]
    mlflow_tracking_uri: str | None
    section: str  # the config section named in errors: train or explora

    @classmethod
    def from_config(cls, section_cfg: dict, section: str) -> TrackingSettings:
        return cls(tuple(section_cfg["loggers"]), section_cfg["mlflow_tracking_uri"], section)


def without_observation_keys(section_cfg: dict) -> dict:
    return {k: v for k, v in section_cfg.items() if k not in OBSERVATION_KEYS}


def check_trackers_installed(settings: TrackingSettings) -> None:
    for name in settings.loggers:
        missing = [package for package in TRACKERS.get(name, ()) if importlib.util.find_spec(package) is None]
        if missing:
            raise ConfigError(f"config key '{settings.section}.loggers' lists {name!r} but "
                              f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: "
                              "pip install -e '.[tracking]' (or remove it from the list)")


def run_tags(experiment: str, step: str, cfg: dict, workflow_dir) -> dict[str, str]:
    """What every tracker run carries: the manifest's config hash and the workflow's commit."""
    git = git_state(workflow_dir)
    commit = git["commit"] or "unknown"
    return {"experiment": experiment, "step": step, "config_hash": config_hash(cfg),
            "git_commit": commit + ("-dirty" if git["dirty"] else "")}


def default_mlflow_uri(phase_dir: Path) -> tuple[str, str]:
    """(tracking URI, artifact location) in the results folder, ``results/<exp>/<phase>/``'s grandparent."""
    results = phase_dir.resolve().parents[1]
    return f"sqlite:///{results / MLFLOW_DB}", (results / MLFLOW_ARTIFACTS).as_uri()


def _runs_file(phase_dir: Path) -> Path:
    return phase_dir / Training.CHECKPOINTS / Training.TRACKING_RUNS


def _known_runs(phase_dir: Path) -> dict:
    path = _runs_file(phase_dir)
    return json.loads(path.read_text()) if path.is_file() else {}


def tracker_loggers(settings: TrackingSettings, phase_dir: Path, tags: dict[str, str]) -> list:
    """Lightning loggers for the trackers in ``settings.loggers`` (csv excluded: the trainer adds it).

    Rank 0 only: the other ranks of a distributed run log nothing (Lightning's loggers would have them
    open the MLflow store too, all at the same moment)."""
    check_trackers_installed(settings)
    if process_rank() != 0:
        return []
    known, loggers = _known_runs(phase_dir), []
    run_name = f"{tags['experiment']}/{tags['step']}"
    for name in settings.loggers:
        if name == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(phase_dir, name=Training.TENSORBOARD, version=""))
            loggers[-1].log_hyperparams(tags)
        elif name == "mlflow":
            logger, uri = _mlflow_logger(settings, phase_dir, tags, run_name, known.get("mlflow"))
            loggers.append(logger)
            known["mlflow"] = {"run_id": logger.run_id, "tracking_uri": uri}
        elif name == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            save_dir = phase_dir / Training.WANDB
            save_dir.mkdir(parents=True, exist_ok=True)
            loggers.append(WandbLogger(project=PROJECT, name=run_name, save_dir=str(save_dir),
                                       offline="WANDB_MODE" not in os.environ, id=known.get("wandb"),
                                       resume="allow", tags=[tags["experiment"], tags["step"]], config=tags))
            known["wandb"] = loggers[-1].experiment.id
    _remember_runs(phase_dir, known)
    return loggers


def _mlflow_logger(settings: TrackingSettings, phase_dir: Path, tags: dict[str, str], run_name: str,
                   known: dict | None):
    """(An MLflow logger whose run is started, or found again, now; its tracking URI).

    The run id a resumed job continues is reused only in the store it came from, and only if that store
    still has it (a changed ``mlflow_tracking_uri`` or a deleted ``mlflow.db`` starts a new run, with a
    warning). Steps of several experiments share one SQLite file: its tables are created, and each run
    started, under a lock file beside it, so that concurrent jobs do not race there.
    """
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri, artifacts = default_mlflow_uri(phase_dir)
    if settings.mlflow_tracking_uri is not None:
        uri, artifacts = settings.mlflow_tracking_uri, None  # the server's own artifact store
    run_id = known["run_id"] if isinstance(known, dict) and known.get("tracking_uri") == uri else None
    with _store_lock(uri):
        if run_id is not None:
            try:
                MlflowClient(uri).get_run(run_id)
            except MlflowException:
                log.warning("MLflow run %s is not in %s any more: starting a new run", run_id, uri)
                run_id = None
        logger = MLFlowLogger(experiment_name=PROJECT, run_name=run_name, tracking_uri=uri, tags=tags,
                              artifact_location=artifacts, run_id=run_id)
        logger.experiment  # noqa: B018 -- creates the experiment and the run now, inside the lock
    return logger, uri


@contextlib.contextmanager
def _store_lock(uri: str):
    """An exclusive ``flock`` on ``<db>.lock`` for a SQLite store; nothing for a server."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri.removeprefix("sqlite:///") + LOCK_SUFFIX)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remember_runs(phase_dir: Path, runs: dict) -> None:
    """Keep the run ids (and the MLflow store each is in), so that a resumed job continues them."""
    if runs and runs != _known_runs(phase_dir):
        path = _runs_file(phase_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, runs)


def tracker_name(logger) -> str | None:
    return {"TensorBoardLogger": "tensorboard", "MLFlowLogger": "mlflow",
            "WandbLogger": "wandb"}.get(type(logger).__name__)


def log_headline(loggers, metrics: dict[str, float | None], step: int) -> dict[str, dict]:
    """The phase's headline numbers into every tracker run, which then ends; returns where each run is
    (for the manifest). None values are left out (an undefined MCC is not a 0)."""
    numbers = {f"headline/{k}": float(v) for k, v in metrics.items() if v is not None}
    runs = {}
    for logger in loggers:
        kind = tracker_name(logger)
        if kind is None:
            continue
        logger.log_metrics(numbers, step=step)
        logger.finalize("success")
        if kind == "mlflow":
            runs[kind] = {"run_id": logger.run_id, "tracking_uri": logger._tracking_uri,
                          "experiment": PROJECT}
        elif kind == "wandb":
            runs[kind] = {"run_id": logger.experiment.id, "dir": Training.WANDB, "project": PROJECT,
                          "offline": bool(logger.experiment.offline)}
            logger.experiment.finish()
        else:
            runs[kind] = {"log_dir": Training.TENSORBOARD}
    return runs
