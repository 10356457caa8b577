"""The real configuration, run the way the README tells a user to: `--configfile config/natix.yaml`.

No pretrained weights can be downloaded here, so the end-to-end test switches `model.init` to random (a
DINOv2 ViT-S/14 with its real architecture at 224 px) and shrinks sizes; everything else is the shipped file.
"""

import json

import pytest
import yaml
from helpers import REPO, TINY_CONFIG, run_cli, write_natix_shards

pytestmark = pytest.mark.slow

NATIX = REPO / "config" / "natix.yaml"
SMALL = {  # sizes only, so that DINOv2 at 224 px runs on 2 CPU cores in a few minutes
    "run_experiments": ["dinov2_explora"],
    "data": {"splits": {"train": 0.4, "val_select": 0.15, "val_calib": 0.15, "val_conformal": 0.15,
                        "val_test": 0.15}},
    "train": {"max_epochs": 1, "batch_size": 8, "num_workers": 0, "precision": "32-true"},
    "explora": {"max_epochs": 1, "batch_size": 8, "num_workers": 0, "precision": "32-true",
                "n_local_crops": 0, "out_dim": 256, "head_hidden": 256, "probe_max_train": 40},
    "gate": {"max_epochs": 30},
    "scrc": {"alpha": 0.3, "delta": 0.3},
    "bundle": {"robustness_levels": [0, 3],
               "model_card": {"submitted_by": "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"}},  # a valid ss58
}


def snakemake(workdir, *args, timeout=1800):
    return run_cli("snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args, timeout=timeout)


def overlay(workdir, content) -> str:
    path = workdir / "overlay.yaml"
    path.write_text(yaml.safe_dump(content))
    return str(path)


def test_natix_config_without_its_weights_fails_before_any_job(tmp_path):
    data = write_natix_shards(tmp_path / "natix", 8)
    done = snakemake(tmp_path, "--cores", "1", "--configfile", str(NATIX),
                     overlay(tmp_path, {"data": {"path": str(data)}}))
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert ("model.pretrained_file weights/vit_small_patch14_dinov2.lvd142m.safetensors does not exist: "
            "put the vit_small_patch14_dinov2.lvd142m weights there") in output, output[-2000:]
    assert not (tmp_path / "results").exists() and "Job stats" not in output


def test_a_configfile_replaces_the_demo_and_files_stack_in_order(tmp_path):
    first = tmp_path / "first.yaml"
    first.write_text(yaml.safe_dump({**TINY_CONFIG, "experiments": {"tiny": {}}}))
    second = tmp_path / "second.yaml"  # adds an experiment on another backbone, and overrides one key
    second.write_text(yaml.safe_dump({"experiments": {"big": {"model": {"backbone": "vit_small_patch14_dinov2.lvd142m"}}},
                                      "train": {"max_epochs": 7}}))
    done = snakemake(tmp_path, "-n", "--configfile", str(first), str(second),
                     "--config", "scrc={'alpha': 0.25}")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "results/tiny/" in output and "results/big/" in output
    assert "results/demo/" not in output and "demo_explora" not in output  # the demo file was not loaded
    assert "experiment tiny: vit_tiny_patch16_224 (0.10M parameters) at 224 px" in output
    assert "experiment big: vit_small_patch14_dinov2.lvd142m (21.63M parameters) at 224 px" in output


def test_natix_config_runs_dinov2_through_every_phase(tmp_path):
    data = write_natix_shards(tmp_path / "natix", 120, size=128)
    config = ["--configfile", str(NATIX),
              overlay(tmp_path, {**SMALL, "data": {**SMALL["data"], "path": str(data)}}),
              "--config", "model={'init': 'random'}"]  # no weights offline: random init, real architecture
    done = snakemake(tmp_path, "--cores", "2", *config)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "experiment dinov2_explora: vit_small_patch14_dinov2.lvd142m (21.63M parameters) at 224 px" in output
    assert "WARNING: experiment dinov2_explora trains from RANDOM weights" in output
    results = tmp_path / "results" / "dinov2_explora"
    baseline = json.loads((results / "phase1_baseline/manifest.json").read_text())
    assert 21_000_000 < baseline["metrics"]["parameters"]["total"] < 23_000_000
    assert baseline["config"]["model"]["backbone_kwargs"] == {} and baseline["config"]["model"]["img_size"] == 224
    explora = json.loads((results / "phase4_explora/manifest.json").read_text())["metrics"]
    # The load-back check means something only if the adapter visibly changed the backbone's outputs.
    assert explora["adaptation_max_abs_change"] > 1000 * explora["load_back_max_abs_diff"]
    assert 21_000_000 < explora["parameters"]["backbone_total"] < 23_000_000
    assert (results / "phase6_bundle/bundle/model.safetensors").is_file()
    export = json.loads((results / "hf_export/manifest.json").read_text())["metrics"]
    assert export["architecture"] == "Dinov2ForImageClassification" and export["head"] == "token_mean"
    assert all(check["decision_mismatches"] == 0 for check in export["parity"].values())
    assert run_cli("streetvision", "verify", str(tmp_path / "results")).returncode == 0
