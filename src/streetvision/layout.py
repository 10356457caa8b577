"""The output layout, in one place: every step's folder and file names, and the readers of its outputs.

``results/<experiment>/<folder>/`` per step (folder names keep the phase numbers users know), each with
its ``manifest.json``. Producers write through these names, consumers read through the readers below,
so no step reaches into another's files by a string of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from streetvision.data.splits import VAL_CALIB, VAL_CONFORMAL, VAL_SELECT, VAL_TEST
from streetvision.errors import StreetvisionError
from streetvision.io.manifest import MANIFEST_NAME
from streetvision.steps import STEPS

RESULTS = "results"
MANIFEST = MANIFEST_NAME  # the manifest contract (streetvision.io.manifest) names the file
LOGS = "logs"
BENCHMARKS = "benchmarks"
SYNTHETIC_CACHE = "_synthetic"  # results/_synthetic/<hash>/: demo scenes shared by experiments
INGEST = "_ingest"  # results/_ingest/<dataset>/: the shared ingest step of a data set (steps.dataset_of)
MLFLOW_DB = "mlflow.db"  # the default MLflow tracking store of train.loggers: mlflow (train/tracking.py)
MLFLOW_ARTIFACTS = "mlartifacts"  # ... and its artifact folder
LOCK_SUFFIX = ".lock"  # <sqlite file>.lock: the lock jobs take to create MLflow runs in it
MLFLOW_LOCK = MLFLOW_DB + LOCK_SUFFIX

# Step (= rule) name -> its folder under results/<experiment>/ (streetvision.steps owns the table); the
# report's folder is results/report/.
STEP_DIRS = {**{name: row.folder for name, row in STEPS.items()}, "report": "report"}


class MissingOutputError(StreetvisionError, FileNotFoundError):
    """A step's output that a later step needs is not there; the message names the file."""


class Data:
    INDEX = "index.parquet"
    QUARANTINE = "quarantine.csv"
    DUPLICATES = "duplicates.csv"
    IMAGES = "images"  # content-addressed store of inline images: images/<sha[:2]>/<sha>.<ext>


class Synthesize:
    """The synthesize step's folder: the gathered records and images, and one sub-folder per shard job."""

    RECORDS = "records.parquet"  # one row per generated image (the record columns + path, bytes)
    IMAGES = "images"  # content-addressed PNGs: images/<sha[:2]>/<sha>.png
    SHARDS = "shards"  # shards/<k>/: shard k's job (its own manifest, records and resumable work)
    WORK = "work"  # inside a shard: the journals of finished captions, prompts and images
    KEY = "work/key.json"  # what the shard's work was made for; a different key starts it afresh

    @staticmethod
    def shard(k: int) -> str:
        return f"{Synthesize.SHARDS}/{k}"


class Training:
    """Working files of a training step (not artifacts: the manifest lists what it exports)."""

    CHECKPOINTS = "checkpoints"
    LAST = "last.ckpt"
    LOGS = "logs"  # Lightning's CSV logger
    TENSORBOARD = "tensorboard"
    WANDB = "wandb"  # W&B's offline runs (train.loggers: wandb)
    TRACKING_RUNS = "tracking_runs.json"  # in CHECKPOINTS: the MLflow / W&B run ids a resumed job continues
    RUN_KEY = "run_key.txt"
    DONE = "training_done.json"
    CURVES = "curves.csv"
    SCRATCH = (CHECKPOINTS, LOGS, TENSORBOARD, WANDB, RUN_KEY, DONE)


class Explora:
    BACKBONE = "backbone.safetensors"
    BACKBONE_CONFIG = "backbone_config.json"
    SUMMARY = "explora.json"


class Baseline:
    MODEL = "model.safetensors"
    MODEL_CONFIG = "model_config.json"
    METRICS = "metrics.json"
    PREDICTED_SPLITS = (VAL_SELECT, VAL_CALIB, VAL_CONFORMAL, VAL_TEST)
    FEATURE_SPLITS = (VAL_CALIB, VAL_CONFORMAL, VAL_TEST)
    VIEWS = ("challenge",
             "clean")  # the seeded challenge pass (what every later step fits and scores on), the source

    @staticmethod
    def predictions(split: str, view: str = "challenge") -> str:
        suffix = "" if view == "challenge" else f".{view}"
        return f"predictions/{split}{suffix}.parquet"

    @staticmethod
    def features(split: str) -> str:
        return f"features/{split}.safetensors"


class Thresholds:
    RESULT = "thresholds.json"
    SWEEP = "sweep.csv"
    PLOT = "sweep.png"


class Gate:
    WEIGHTS = "gate.safetensors"
    CONFIG = "gate_config.json"
    REPORT = "gate_report.json"
    PLOT = "risk_coverage.png"
    SCORED_SPLITS = (VAL_CONFORMAL, VAL_TEST)

    @staticmethod
    def scores(split: str) -> str:
        return f"scores/{split}.parquet"


class Scrc:
    RESULT = "scrc.json"
    TEMPERATURE = "temperature.json"
    RELIABILITY_PLOT = "reliability.png"
    RISK_PLOT = "risk_coverage.png"


class Bundle:
    DIR = "bundle"  # the servable bundle itself (its files are listed in bundle/bundle.json)
    PARITY = "parity.json"
    ROBUSTNESS = "robustness.json"


class HFExport:
    REPO = "repo"  # the folder to push as a Hugging Face model repo
    PARITY = "parity.json"
    SUMMARY = "export.json"


class Report:
    # The summary is the public face of a run: it lives in results/ beside the experiments (the README's
    # contract), written and listed by the report step as artifacts one level above its own folder.
    SUMMARY_JSON = "summary.json"
    SUMMARY_MD = "summary.md"
    SUMMARY_JSON_PATH = f"../{SUMMARY_JSON}"  # relative to results/report/
    SUMMARY_MD_PATH = f"../{SUMMARY_MD}"

    @staticmethod
    def figure(experiment: str, name: str) -> str:
        return f"{experiment}/{name}.png"


# What the workflow writes under results/ beside the experiments' folders: no experiment may take one of these
# names (config.check_experiment_name), or its folder would be another step's folder.
SHARED_RESULTS_ENTRIES = (STEP_DIRS["report"], LOGS, BENCHMARKS, SYNTHETIC_CACHE, INGEST, Report.SUMMARY_JSON,
                          Report.SUMMARY_MD, MLFLOW_DB, MLFLOW_ARTIFACTS, MLFLOW_LOCK)


# ---------------------------------------------------------------- paths

def step_dir(results: str | Path, experiment: str, step: str) -> Path:
    if step in STEPS and STEPS[step].shared:
        raise ValueError(f"step {step} is shared by a data set's experiments: its folder is ingest_dir()")
    return Path(results) / experiment / STEP_DIRS[step]


def ingest_dir(results: str | Path, dataset: str) -> Path:
    return Path(results) / INGEST / dataset


def manifest_of(step_folder: str | Path) -> Path:
    return Path(step_folder) / MANIFEST


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise MissingOutputError(f"{path}: {what} is missing; run its step first")
    return path


def read_json(path: Path, what: str) -> dict:
    return json.loads(_existing(path, what).read_text())


# ---------------------------------------------------------------- readers

def load_index(data_dir: str | Path) -> pd.DataFrame:
    """The data index with its image paths (``path``, ``challenge_path``, ``train_path``, ``level0_path``)
    resolved to absolute paths."""
    data_dir = Path(data_dir)
    index = pd.read_parquet(_existing(data_dir / Data.INDEX, "the data index"))
    for column in ("path", "challenge_path", "train_path", "level0_path"):
        if column in index:
            index[column] = [p if not isinstance(p, str) or Path(p).is_absolute() else str(data_dir / p)
                             for p in index[column]]  # a null (no level-0 copy) stays null
    return index


def predictions_of(baseline_dir: str | Path, split: str, view: str = "challenge") -> pd.DataFrame:
    """Phase 1's id, label, logit, probability (and domain, source; the challenge's level and distortions)
    for one split, through the challenge pass (default) or the clean view; NaN/inf is an error naming it."""
    path = _existing(Path(baseline_dir) / Baseline.predictions(split, view),
                     f"phase 1 {view} predictions for split '{split}'")
    table = pd.read_parquet(path)
    bad = ~(np.isfinite(table["logit"]) & np.isfinite(table["probability"]))
    if bad.any():
        raise StreetvisionError(f"{path}: {int(bad.sum())} of {len(table)} logits/probabilities of split "
                                f"'{split}' are NaN or infinite (first id: {table.loc[bad, 'id'].iloc[0]})")
    return table


def features_of(baseline_dir: str | Path, split: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Phase 1's predictions and pooled features of one split, checked to be in the same order."""
    from safetensors import safe_open

    table = predictions_of(baseline_dir, split)
    path = _existing(Path(baseline_dir) / Baseline.features(split), f"phase 1 features for split '{split}'")
    with safe_open(str(path), framework="np") as handle:
        features = handle.get_tensor("features")
        ids = json.loads(handle.metadata()["ids"])
    if ids != table["id"].tolist():
        raise StreetvisionError(f"{path}: feature rows are not in the order of {Baseline.predictions(split)}")
    return table, features


def model_record_of(baseline_dir: str | Path) -> dict:
    return read_json(Path(baseline_dir) / Baseline.MODEL_CONFIG, "phase 1's model record")


def curves_of(step_folder: str | Path) -> pd.DataFrame:
    return pd.read_csv(_existing(Path(step_folder) / Training.CURVES, "training curves"))


def thresholds_of(thresholds_dir: str | Path) -> dict:
    return read_json(Path(thresholds_dir) / Thresholds.RESULT, "phase 2's thresholds")


def threshold_of(thresholds_dir: str | Path) -> float:
    """The decision threshold: stage 1 says roadwork iff probability >= it."""
    return float(thresholds_of(thresholds_dir)["threshold"])


def temperature_of(thresholds_dir: str | Path) -> float:
    """The temperature phase 2 fitted on val_calib: calibrated probability = sigmoid(logit / T)."""
    return float(thresholds_of(thresholds_dir)["temperature"])


def gate_scores_of(gate_dir: str | Path, split: str) -> pd.DataFrame:
    return pd.read_parquet(_existing(Path(gate_dir) / Gate.scores(split), f"gate scores for split '{split}'"))


def scrc_of(scrc_dir: str | Path) -> dict:
    return read_json(Path(scrc_dir) / Scrc.RESULT, "phase 5's SCRC result")


def bundle_dir_of(bundle_step_dir: str | Path) -> Path:
    return Path(bundle_step_dir) / Bundle.DIR


def bundle_policy_of(bundle_step_dir: str | Path) -> dict:
    """The decision policy the bundle ships (``policy.json`` inside the bundle step's ``bundle/``)."""
    from streetvision.bundle import files

    return read_json(bundle_dir_of(bundle_step_dir) / files.POLICY, "the bundle's policy")


def robustness_of(bundle_step_dir: str | Path) -> dict:
    return read_json(Path(bundle_step_dir) / Bundle.ROBUSTNESS, "phase 6's robustness scores")


def hf_parity_of(hf_export_dir: str | Path) -> dict:
    return read_json(Path(hf_export_dir) / HFExport.PARITY, "the Hugging Face export's parity check")
