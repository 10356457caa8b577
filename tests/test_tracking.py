"""Seeing long runs: progress lines (ETA, images/s), the trackers of train.loggers, read back with their own
clients (MLflow from its SQLite store, TensorBoard's event files, W&B's offline run)."""

import json
import logging
import re

import pytest
from helpers import ingest_and_index, resolved_config

from streetvision.config import ConfigError
from streetvision.progress import ItemProgress, format_duration
from streetvision.train import tracking
from streetvision.train.tracking import TrackingSettings, check_trackers_installed

PROGRESS_LINE = re.compile(r"baseline demo: epoch (\d+)/(\d+), step (\d+)/(\d+), ([0-9.]+) img/s, "
                           r"ETA (\d+:\d\d:\d\d), loss ([0-9.]+), val_select MCC (-?[0-9.]+|\?)$")


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_item_progress_writes_a_line_per_interval_and_at_the_end(caplog):
    clock = FakeClock()
    progress = ItemProgress("synthesize images", 10, 30.0, done_before=4, clock=clock)
    with caplog.at_level(logging.INFO, logger="streetvision.progress"):
        for _ in range(6):
            clock.now += 10.0  # one image per 10 s
            progress.advance()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["synthesize images: 7/10 images (70%), 0.1 images/s, ETA 0:00:30",
                     "synthesize images: 10/10 images (100%), 0.1 images/s, ETA 0:00:00"]


def test_durations_read_as_hours_minutes_seconds():
    assert format_duration(3723.4) == "1:02:03" and format_duration(None) == "?"


def test_a_listed_tracker_that_is_not_installed_stops_the_step_naming_the_key(monkeypatch):
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name: None if name == "wandb" else real(name))
    with pytest.raises(ConfigError, match=r"'explora.loggers' lists 'wandb'.*pip install -e '\.\[tracking\]'"):
        check_trackers_installed(TrackingSettings(("csv", "wandb"), None, "explora"))
    check_trackers_installed(TrackingSettings(("csv", "mlflow"), None, "train"))


def test_mlflow_without_its_sqlite_store_packages_is_refused_naming_them(monkeypatch):
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name: None if name == "alembic" else real(name))
    with pytest.raises(ConfigError, match=r"'train.loggers' lists 'mlflow' but alembic is not installed"):
        check_trackers_installed(TrackingSettings(("mlflow",), None, "train"))


TAGS = {"experiment": "demo", "step": "baseline", "config_hash": "abc", "git_commit": "unknown"}


def test_ranks_above_zero_open_no_tracker(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    phase = tmp_path / "results" / "demo" / "baseline"
    assert tracking.tracker_loggers(TrackingSettings(("csv", "mlflow", "tensorboard"), None, "train"), phase,
                                    TAGS) == []
    assert not (tmp_path / "results" / "mlflow.db").exists() and not phase.exists()


@pytest.mark.slow  # MLflow creates its SQLite schema twice: ~10 s
def test_a_run_id_is_continued_only_in_the_store_that_has_it(tmp_path, caplog):
    """Resumed in the same store: the same MLflow run. Another ``mlflow_tracking_uri``, or the store
    without the run: a new run and a warning, never a crash of the (possibly finished) phase."""
    from mlflow.tracking import MlflowClient

    phase = tmp_path / "results" / "demo" / "baseline"
    settings = TrackingSettings(("csv", "mlflow"), None, "train")
    (first,) = tracking.tracker_loggers(settings, phase, TAGS)
    assert tracking.tracker_loggers(settings, phase, TAGS)[0].run_id == first.run_id
    other_uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    (moved,) = tracking.tracker_loggers(TrackingSettings(("mlflow",), other_uri, "train"), phase, TAGS)
    assert moved.run_id != first.run_id and MlflowClient(other_uri).get_run(moved.run_id)
    runs_file = phase / "checkpoints" / "tracking_runs.json"  # a store that lost the run (e.g. rebuilt)
    runs_file.write_text(json.dumps({"mlflow": {"run_id": "0" * 32, "tracking_uri": other_uri}}))
    with caplog.at_level(logging.WARNING, logger="streetvision.train.tracking"):
        (fresh,) = tracking.tracker_loggers(TrackingSettings(("mlflow",), other_uri, "train"), phase, TAGS)
    assert fresh.run_id != moved.run_id and "is not in" in caplog.text
    assert json.loads(runs_file.read_text()) == {"mlflow": {"run_id": fresh.run_id, "tracking_uri": other_uri}}


def test_the_schema_refuses_an_unknown_tracker(repo):
    with pytest.raises(ConfigError, match="train.loggers"):
        resolved_config(repo, {"train": {"loggers": ["csv", "neptune"]}})


@pytest.mark.slow
def test_phase1_progress_lines_and_every_tracker_read_back(repo, tmp_path, capfd, monkeypatch):
    """A 2-epoch phase 1 through run_baseline inside the step's logging: the log holds progress lines with
    ETA and img/s (one per epoch at least), the console one line per epoch; the MLflow run is read back with
    MLflow's client from the SQLite store (tags, headline metrics, finished), TensorBoard wrote events, W&B
    an offline run. Run again, the finished training is not redone and the same MLflow run is continued;
    run again with another MLflow store, a new run there (a run id is never looked for in the wrong store)."""
    from mlflow.tracking import MlflowClient

    from streetvision.logs import log_to_file
    from streetvision.phases.baseline import run_baseline

    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = resolved_config(repo, {"train": {"max_epochs": 2, "progress_interval_s": 1e-6,
                                           "loggers": ["csv", "tensorboard", "mlflow", "wandb"]}})
    results = tmp_path / "results"
    data = results / "demo" / "data"
    ingest_and_index(cfg={"data": cfg["data"]}, out_dir=data, experiment="demo")
    sections = {k: cfg[k] for k in ("model", "train", "challenge")}
    phase_dir, log_path = results / "demo" / "phase1_baseline", results / "logs" / "phase1.log"
    with log_to_file(log_path):
        manifest = json.loads(run_baseline(cfg=sections, data_dir=data, out_dir=phase_dir, experiment="demo",
                                           workflow_dir=str(repo)).read_text())
    lines = [m.group(0) for m in map(PROGRESS_LINE.search, log_path.read_text().splitlines()) if m]
    parsed = [PROGRESS_LINE.search(line).groups() for line in lines]
    assert {int(epoch) for epoch, *_ in parsed} == {1, 2} and all(total == "2" for _, total, *_ in parsed)
    assert all(float(rate) > 0 for _, _, _, _, rate, _, _, _ in parsed)
    _, _, step, total_steps, _, eta, _, _ = parsed[-1]
    assert step == total_steps and eta == "0:00:00"  # the last epoch's end: every step done
    console = capfd.readouterr().err.splitlines()
    epochs = [line for line in console if line.startswith("baseline demo: epoch")]
    assert len(epochs) == 2 and "ETA" in epochs[0] and "val_select MCC" in epochs[0]

    runs = manifest["metrics"]["tracking"]
    assert runs["mlflow"]["tracking_uri"] == f"sqlite:///{results.resolve() / 'mlflow.db'}"
    run = MlflowClient(runs["mlflow"]["tracking_uri"]).get_run(runs["mlflow"]["run_id"])
    assert run.info.status == "FINISHED"
    assert {k: run.data.tags[k] for k in ("experiment", "step", "config_hash")} == {
        "experiment": "demo", "step": "baseline", "config_hash": manifest["config_hash"]}
    assert run.data.tags["git_commit"].split("-")[0] == manifest["git"]["commit"]
    test = manifest["metrics"]["val_test"]["challenge"]
    assert run.data.metrics["headline/val_test_mcc"] == pytest.approx(test["mcc"])
    assert run.data.metrics["headline/threshold"] == 0.5
    low, high = run.data.metrics["headline/val_test_mcc_ci_low"], run.data.metrics["headline/val_test_mcc_ci_high"]
    assert low <= test["mcc"] <= high
    assert "headline/val_test_natix_reward" in run.data.metrics and "train/loss_epoch" in run.data.metrics
    assert list((phase_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert runs["wandb"]["offline"] and list((phase_dir / "wandb").rglob(f"*{runs['wandb']['run_id']}*"))

    sections["train"] = {**sections["train"], "loggers": ["csv", "mlflow"]}  # observation only: no retraining
    again = json.loads(run_baseline(cfg=sections, data_dir=data, out_dir=phase_dir, experiment="demo",
                                    workflow_dir=str(repo)).read_text())
    assert again["metrics"]["global_step"] == manifest["metrics"]["global_step"]
    assert again["metrics"]["tracking"]["mlflow"]["run_id"] == runs["mlflow"]["run_id"]
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"  # the finished phase re-entered with another store
    sections["train"] = {**sections["train"], "mlflow_tracking_uri": elsewhere}
    moved = json.loads(run_baseline(cfg=sections, data_dir=data, out_dir=phase_dir, experiment="demo",
                                    workflow_dir=str(repo)).read_text())
    assert moved["metrics"]["global_step"] == manifest["metrics"]["global_step"]
    moved_run = moved["metrics"]["tracking"]["mlflow"]
    assert moved_run["tracking_uri"] == elsewhere and moved_run["run_id"] != runs["mlflow"]["run_id"]
    assert MlflowClient(elsewhere).get_run(moved_run["run_id"]).info.status == "FINISHED"
