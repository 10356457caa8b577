"""Experiment trackers of the training steps: ``train.loggers`` (``explora.loggers``) through Lightning.

``csv`` is always on (it makes the phase's ``curves.csv``); ``tensorboard``, ``mlflow`` and ``wandb`` are
Lightning's own loggers, from the optional ``.[tracking]`` extra: a tracker listed but not installed stops
the step before training, naming the key (never a quiet run without it). Every run is tagged with the
experiment, the step, the config hash (the manifest's) and the git commit, and ends with the phase's
headline metrics (``log_headline``). A run killed and resumed continues its MLflow / W&B run: the run ids
are kept beside the checkpoints (``tracking_runs.json``) and removed with them when the config changes.

- MLflow: ``mlflow_tracking_uri`` (null = ``sqlite:///<results>/mlflow.db``, artifacts in
  ``<results>/mlartifacts``), experiment ``streetvision``, run name ``<experiment>/<step>``.
- W&B: project ``streetvision``, offline (files under the phase's ``wandb/``) unless ``WANDB_MODE`` is set.
- TensorBoard: the phase's ``tensorboard/``.
"""

from __future__ import annotations

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
from streetvision.layout import MLFLOW_ARTIFACTS, MLFLOW_DB, Training
from streetvision.runtime import process_rank

log = logging.getLogger(__name__)

CSV = "csv"
TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # logger -> its package
PROJECT = "streetvision"  # the MLflow experiment and W&B project every run goes to
# Keys that only change what is observed, not what is trained: a change resumes the same training.
OBSERVATION_KEYS = ("loggers", "mlflow_tracking_uri", "progress_interval_s")


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
        package = TRACKERS.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(f"config key '{settings.section}.loggers' lists {name!r} but the {package} "
                              "package is not installed: pip install -e '.[tracking]' (or remove it from the "
                              "list)")


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


def _known_runs(phase_dir: Path) -> dict[str, str]:
    path = _runs_file(phase_dir)
    return json.loads(path.read_text()) if path.is_file() else {}


def tracker_loggers(settings: TrackingSettings, phase_dir: Path, tags: dict[str, str]) -> list:
    """Lightning loggers for the trackers in ``settings.loggers`` (csv excluded: the trainer adds it)."""
    check_trackers_installed(settings)
    known, loggers = _known_runs(phase_dir), []
    run_name = f"{tags['experiment']}/{tags['step']}"
    for name in settings.loggers:
        if name == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(phase_dir, name=Training.TENSORBOARD, version=""))
            loggers[-1].log_hyperparams(tags)
        elif name == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger

            uri, artifacts = default_mlflow_uri(phase_dir)
            if settings.mlflow_tracking_uri is not None:
                uri, artifacts = settings.mlflow_tracking_uri, None  # the server's own artifact store
            loggers.append(MLFlowLogger(experiment_name=PROJECT, run_name=run_name, tracking_uri=uri,
                                        tags=tags, artifact_location=artifacts, run_id=known.get("mlflow")))
        elif name == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            save_dir = phase_dir / Training.WANDB
            save_dir.mkdir(parents=True, exist_ok=True)
            loggers.append(WandbLogger(project=PROJECT, name=run_name, save_dir=str(save_dir),
                                       offline="WANDB_MODE" not in os.environ, id=known.get("wandb"),
                                       resume="allow", tags=[tags["experiment"], tags["step"]], config=tags))
    _remember_runs(phase_dir, loggers)
    return loggers


def _remember_runs(phase_dir: Path, loggers: list) -> None:
    """Start the runs now (rank 0) and keep their ids, so that a resumed job continues them."""
    if process_rank() != 0:
        return
    runs = {}
    for logger in loggers:
        kind = tracker_name(logger)
        if kind == "mlflow":
            runs["mlflow"] = logger.run_id
        elif kind == "wandb":
            runs["wandb"] = logger.experiment.id
    if runs:
        path = _runs_file(phase_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {**_known_runs(phase_dir), **runs})


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
