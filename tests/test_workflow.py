"""Workflow tests: the real Snakefile, run small in a temporary directory."""

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest
import yaml
from helpers import BIN, TINY_CONFIG, run_cli

from streetvision.config import deep_merge


def write_config(workdir, overrides=None):
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(deep_merge(TINY_CONFIG, overrides or {})))


@pytest.fixture
def workdir(tmp_path):
    write_config(tmp_path)
    return tmp_path


def snakemake_args(repo, workdir, *args):
    return ["snakemake", "-s", str(repo / "Snakefile"), "-d", str(workdir), "--configfile",
            str(workdir / "tiny.yaml"), *args]


def snakemake(repo, workdir, *args, timeout=900):
    return run_cli(*snakemake_args(repo, workdir, *args), timeout=timeout)


def manifest(workdir, phase, exp="demo"):
    return json.loads((workdir / "results" / exp / phase / "manifest.json").read_text())


SCRC_POLICY = {"bundle": {"policy": "scrc"}}  # the policy that needs every phase


@pytest.mark.slow
def test_pipeline_runs_verifies_and_is_then_up_to_date(repo, workdir):
    write_config(workdir, SCRC_POLICY)
    done = snakemake(repo, workdir, "--cores", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for phase in ("data", "phase1_baseline", "phase2_thresholds", "phase3_gate", "phase5_scrc",
                  "phase6_bundle", "hf_export"):
        assert manifest(workdir, phase)["phase"] == phase
        assert (workdir / "results/demo/logs" / f"{phase}.log").is_file()
        assert (workdir / "results/demo/benchmarks" / f"{phase}.tsv").is_file()
    assert 0 < manifest(workdir, "phase2_thresholds")["metrics"]["threshold"] < 1
    verified = run_cli("streetvision", "verify", str(workdir / "results"))
    assert verified.returncode == 0 and "OK: 9 manifest(s)" in verified.stdout
    lineage = run_cli("streetvision", "inspect", str(workdir / "results/demo/phase5_scrc"))
    assert [line.split()[0] for line in lineage.stdout.splitlines() if "[demo]" in line] == [
        "phase5_scrc", "phase1_baseline", "data", "phase2_thresholds", "phase3_gate"]
    scrc = manifest(workdir, "phase5_scrc")["metrics"]
    assert 0 <= scrc["val_test_coverage"] <= 1 and "val_test_selective_risk" in scrc
    summary = json.loads((workdir / "results/summary.json").read_text())["experiments"]
    assert [row["experiment"] for row in summary] == ["demo"] and "level_3" in summary[0]["by_level"]
    scored = {"mcc", "accuracy", "natix_reward", "n", "clean_mcc"}
    assert set(summary[0]["by_domain"]) == {"real"} and scored <= set(summary[0]["by_domain"]["real"])
    assert len(summary[0]["by_source"]) == 1 and scored <= set(next(iter(summary[0]["by_source"].values())))
    assert "0 mismatches" in summary[0]["hf_parity"]
    for row in (summary[0], summary[0]["by_level"]["level_3"], summary[0]["by_domain"]["real"]):
        low, high = row["mcc_ci"]  # every headline, per-domain and per-level row carries its interval
        assert low <= row["mcc"] <= high and row["natix_reward_ci"][0] <= row["natix_reward_ci"][1]
    markdown = (workdir / "results/summary.md").read_text()
    assert markdown.startswith("# streetvision summary")
    assert f"{summary[0]['mcc']:.4f} [{summary[0]['mcc_ci'][0]:.4f}, {summary[0]['mcc_ci'][1]:.4f}]" in markdown
    report = snakemake(repo, workdir, "--report", str(workdir / "report.html"))
    assert report.returncode == 0, report.stderr[-2000:]
    html = (workdir / "report.html").read_text()
    for figure in ("sweep.png", "risk_coverage.png", "reliability.png", "confusion.png", "curves.png"):
        assert figure in html
    again = snakemake(repo, workdir, "--cores", "2", "-n")
    assert "Nothing to be done" in again.stdout + again.stderr

    # Bad input later loses nothing already done: a config typo stops before any job ...
    write_config(workdir, {**SCRC_POLICY, "scrc": {"alpah": 0.1}})
    typo = snakemake(repo, workdir, "--cores", "2")
    assert typo.returncode != 0 and "unknown config key 'scrc.alpah'" in typo.stdout + typo.stderr
    assert run_cli("streetvision", "verify", str(workdir / "results")).returncode == 0
    # ... and a phase that fails (val_conformal too small for alpha) leaves its inputs intact.
    write_config(workdir, {**SCRC_POLICY, "scrc": {"alpha": 0.005}})
    failed = snakemake(repo, workdir, "--cores", "2")
    assert failed.returncode != 0
    assert "SCRC needs at least" in (workdir / "results/demo/logs/phase5_scrc.log").read_text()
    for phase in ("data", "phase1_baseline", "phase2_thresholds", "phase3_gate"):
        assert run_cli("streetvision", "verify", str(workdir / "results/demo" / phase)).returncode == 0
    assert not (workdir / "results/demo/phase5_scrc/manifest.json").exists()
    stale = run_cli("streetvision", "verify", str(workdir / "results"))  # phase 6 consumed the old phase 5
    assert stale.returncode == 1 and "phase5_scrc/manifest.json: consumed manifest missing" in stale.stdout


LORA_EMA_ACCUMULATION = {"model": {"freeze": "lora", "lora": {"rank": 4}},
                         "train": {"ema_decay": 0.9, "accumulate_grad_batches": 2}}


@pytest.mark.slow
@pytest.mark.parametrize(("phase", "tuning"), [("phase4_explora", {}),
                                               ("phase1_baseline", LORA_EMA_ACCUMULATION)])
def test_training_resumes_after_being_killed(repo, workdir, phase, tuning):
    epochs = 8 if phase == "phase1_baseline" else 30  # ExPLoRA epochs on tiny data take a fraction of a second
    write_config(workdir, deep_merge({"train": {"max_epochs": epochs},
                                      "explora": {"enabled": phase == "phase4_explora", "max_epochs": epochs,
                                                  "batch_size": 16}}, tuning))
    target = f"results/demo/{phase}/manifest.json"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(snakemake_args(repo, workdir, "--cores", "2", target), env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = workdir / "results/demo" / phase / "checkpoints/last.ckpt"
    deadline = time.monotonic() + 600
    while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert last.exists(), "training never wrote a checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole Snakemake process tree
    proc.wait()
    assert not (workdir / target).exists()
    assert not (workdir / "results/demo" / phase / "training_done.json").exists(), "killed too late to test resume"
    assert snakemake(repo, workdir, "--unlock").returncode == 0
    done = snakemake(repo, workdir, "--cores", "2", "--rerun-incomplete", target)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = manifest(workdir, phase)["metrics"]
    assert metrics["resumed_from_step"] and metrics["resumed_from_step"] > 0
    assert metrics["global_step"] > metrics["resumed_from_step"] and metrics["epochs"] == epochs
    log = (workdir / "results/demo/logs" / f"{phase}.log").read_text()
    assert "resuming from" in log
    step = "baseline" if phase == "phase1_baseline" else "explora"  # the resumed run's progress lines
    assert re.search(rf"{step} demo: epoch {epochs}/{epochs}, step (\d+)/\1, [0-9.]+ img/s, ETA 0:00:00, loss", log)
    assert run_cli("streetvision", "verify", str(workdir / "results")).returncode == 0
    if tuning:  # LoRA adapters resumed, and the average went on from the killed run's (one per optimiser step)
        import torch

        state = torch.load(last, map_location="cpu", weights_only=True)
        assert any("lora_A" in name for name in state["state_dict"])
        assert int(state["averaging_state"]["n_averaged"]) == metrics["global_step"]
        assert 0 < metrics["parameters"]["trainable"] < metrics["parameters"]["total"] / 2


@pytest.mark.slow
def test_ddp_on_cpu_with_two_gloo_processes(repo, workdir):
    """Both training phases under DDP (2 CPU processes, gloo); ExPLoRA's frozen weights must not break it."""
    write_config(workdir, {"train": {"cpu_devices": 2,
                                     "max_epochs": 1},  # ExPLoRA needs a few steps to move the teacher
                           "explora": {"enabled": True, "cpu_devices": 2, "max_epochs": 2, "batch_size": 8,
                                       "lr": 0.01, "ema_momentum": 0.5}})
    done = snakemake(repo, workdir, "--cores", "2", "results/demo/phase1_baseline/manifest.json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for phase in ("phase4_explora", "phase1_baseline"):
        m = manifest(workdir, phase)
        assert m["device"] == "cpux2" and m["metrics"]["global_step"] > 0
        log = (workdir / "results/demo/logs" / f"{phase}.log").read_text()
        assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in log + done.stderr
    assert manifest(workdir,
                    "phase1_baseline")["consumed"][1]["path"].endswith("phase4_explora/manifest.json")


@pytest.mark.slow
def test_explora_appears_in_the_dag_only_when_enabled(repo, workdir):
    write_config(workdir, {"experiments": {"plain": {}, "adapted": {"explora": {"enabled": True}}}})
    dag = snakemake(repo, workdir, "--dag")
    assert dag.returncode == 0, dag.stderr[-2000:]
    labels = {}  # node id -> label, e.g. 4 -> "data\\nexp: adapted"
    edges = set()
    for line in dag.stdout.splitlines():
        line = line.strip()
        if "[label" in line:
            labels[line.split("[")[0]] = line.split('label = "')[1].split('"')[0]
        elif "->" in line:
            edges.add(tuple(part.strip() for part in line.split("->")))
    explora = [node for node, label in labels.items() if label.startswith("explora")]
    assert len(explora) == 1  # the 'plain' experiment has no phase 4
    data_adapted = next(node for node, label in labels.items() if label.startswith("data") and "adapted" in label)
    baseline_after_explora = [dst for src, dst in edges if src == explora[0]]
    assert (data_adapted, explora[0]) in edges
    assert [labels[n] for n in baseline_after_explora] == ["baseline"]
    assert (data_adapted, baseline_after_explora[0]) in edges  # the adapted experiment's baseline


@pytest.mark.slow
def test_dry_run_of_the_full_target(repo, workdir):
    write_config(workdir, SCRC_POLICY)
    done = snakemake(repo, workdir, "-n", "--quiet", "rules")
    assert done.returncode == 0, done.stderr[-3000:]
    for rule in ("data", "baseline", "thresholds", "gate", "scrc", "bundle", "hf_export", "report"):
        assert rule in done.stdout + done.stderr


@pytest.mark.slow
def test_a_threshold_bundle_needs_phases_1_and_2_only(repo, workdir):
    """Neither the gate nor SCRC can block a bundle that does not use them (snakemake -n shows it)."""
    done = snakemake(repo, workdir, "-n", "--quiet", "rules")
    assert done.returncode == 0, done.stderr[-3000:]
    planned = {line.split()[0] for line in done.stdout.splitlines() if line.strip() and line.split()[-1].isdigit()}
    assert {"data", "baseline", "thresholds", "bundle", "hf_export", "report"} <= planned
    assert not planned & {"gate", "scrc"}, planned
    write_config(workdir, {"bundle": {"policy": "scrc"}, "scrc": {"score": "confidence"}})
    done = snakemake(repo, workdir, "-n", "--quiet", "rules")
    planned = {line.split()[0] for line in done.stdout.splitlines() if line.strip() and line.split()[-1].isdigit()}
    assert "scrc" in planned and "gate" not in planned  # the confidence score needs no gate


@pytest.mark.slow
def test_config_error_stops_before_any_job(repo, workdir):
    write_config(workdir, {"data": {"splits": {"train": 0.9}}})
    done = snakemake(repo, workdir, "-n")
    assert done.returncode != 0 and "data.splits': ratios must sum to 1" in done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("experiments", [{"demo": {}}, {"demo": {},
                                                        "adapted": {"explora": {"enabled": True}}}])
def test_dag_renders_to_svg(repo, workdir, experiments):
    if shutil.which("dot") is None:
        pytest.fail("graphviz 'dot' is not installed: apt-get install graphviz (.ci/run does this)")
    write_config(workdir, {"experiments": experiments})
    for graph in ("--dag", "--rulegraph"):
        dag = snakemake(repo, workdir, graph)
        assert dag.returncode == 0 and dag.stdout.lstrip().startswith("digraph"), dag.stdout[:200]
        assert "baseline" in dag.stdout and "thresholds" in dag.stdout
        svg = subprocess.run(["dot", "-Tsvg"], input=dag.stdout, capture_output=True, text=True, timeout=60)
        assert svg.returncode == 0 and "<svg" in svg.stdout


@pytest.mark.slow
def test_replicates_run_as_experiments_of_one_data_set_and_meet_in_the_report(repo, workdir):
    write_config(workdir, {"experiments": {"demo": {"replicates": 2}}})
    done = snakemake(repo, workdir, "-n", "--quiet", "rules")
    assert done.returncode == 0, done.stderr[-3000:]
    planned = {line.split()[0]: int(line.split()[-1]) for line in done.stdout.splitlines()
               if line.strip() and line.split()[-1].isdigit()}
    assert planned["ingest"] == 1 and planned["data"] == planned["baseline"] == 2 and planned["report"] == 1
    graph = snakemake(repo, workdir, "--dag").stdout
    assert "demo-s0" in graph and "demo-s1" in graph


@pytest.mark.slow
def test_a_sweep_plans_its_points_runs_them_and_the_report_ranks_them(repo, workdir):
    write_config(workdir, {"sweeps": {"lr": {"overrides": {"train": {"max_epochs": 1}},
                                             "grid": {"train.lr": [0.001, 0.003, 0.01]}}},
                           "run_experiments": ["lr"], "hf_export": {"enabled": False}})
    planned = snakemake(repo, workdir, "-n", "--quiet", "rules")
    assert planned.returncode == 0, planned.stderr[-3000:]
    counts = {line.split()[0]: int(line.split()[-1]) for line in planned.stdout.splitlines()
              if line.strip() and line.split()[-1].isdigit()}
    assert counts["baseline"] == 3 and counts["ingest"] == 1
    assert all(f"lr-{k}" in planned.stdout + planned.stderr for k in range(3))  # the plan lines name them
    done = snakemake(repo, workdir, "--cores", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((workdir / "results/summary.json").read_text())
    (sweep,) = summary["sweeps"]
    scores = [point["val_select_mcc"] for point in sweep["points"]]
    assert sweep["sweep"] == "lr" and scores == sorted(scores, reverse=True)
    assert sorted(point["values"]["train.lr"] for point in sweep["points"]) == [0.001, 0.003, 0.01]
    assert all(point["mcc_ci"] for point in sweep["points"])
    assert "### Sweep lr (ranked on val_select MCC (phase 1); never on val_test)" in (
        workdir / "results/summary.md").read_text()
