"""Phase 1 end to end on tiny data (fast dev runs of the real code path)."""

import json

import pandas as pd
import pytest
import torch
from helpers import resolved_config
from safetensors.torch import load_file

from streetvision.data.phase import run_data_phase
from streetvision.io.manifest import verify_tree
from streetvision.train.phase1 import FEATURE_SPLITS, PREDICTED_SPLITS, run_baseline_phase


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, repo):
    out = tmp_path_factory.mktemp("data") / "data"
    run_data_phase(resolved_config(repo)["data"], out, "demo")
    return out


def test_phase1_fast_dev_run_writes_every_output(repo, data_dir, tmp_path):
    cfg = resolved_config(repo)
    manifest_path = run_baseline_phase(cfg, data_dir, tmp_path / "p1", "demo")
    manifest = json.loads(manifest_path.read_text())
    listed = {a["path"] for a in manifest["artifacts"]}
    assert {"model.safetensors", "model_config.json", "metrics.json", "curves.csv"} <= listed
    assert {f"predictions/{s}.parquet" for s in PREDICTED_SPLITS} <= listed
    assert {f"features/{s}.safetensors" for s in FEATURE_SPLITS} <= listed
    index = pd.read_parquet(data_dir / "index.parquet")
    for split in PREDICTED_SPLITS:
        table = pd.read_parquet(tmp_path / "p1" / "predictions" / f"{split}.parquet")
        assert list(table.columns) == ["id", "label", "logit", "probability"]
        assert table["id"].tolist() == index.loc[index["split"] == split, "id"].tolist()
        assert torch.allclose(torch.sigmoid(torch.tensor(table["logit"].values)), torch.tensor(table["probability"].values))
    features = load_file(tmp_path / "p1" / "features" / "val_test.safetensors")["features"]
    assert features.shape == (int((index["split"] == "val_test").sum()), 32)
    assert manifest["metrics"]["global_step"] > 0 and manifest["metrics"]["resumed_from_step"] is None
    consumed = [(tmp_path / "p1" / c["path"]).resolve() for c in manifest["consumed"]]
    assert consumed == [(data_dir / "manifest.json").resolve()]
    assert verify_tree(tmp_path / "p1")[1] == []


def test_exported_weights_reproduce_the_predictions(repo, data_dir, tmp_path):
    from streetvision.data.transforms import eval_transform
    from streetvision.models.backbone import BackboneSpec, rebuild_backbone
    from streetvision.models.classifier import RoadworkClassifier

    run_baseline_phase(resolved_config(repo), data_dir, tmp_path / "p1", "demo")
    config = json.loads((tmp_path / "p1" / "model_config.json").read_text())
    model = RoadworkClassifier(rebuild_backbone(BackboneSpec(config["backbone"], config["img_size"], config["backbone_kwargs"])),
                               config["head_hidden"], config["head_dropout"])
    model.load_state_dict(load_file(tmp_path / "p1" / "model.safetensors"))
    model.eval()
    table = pd.read_parquet(tmp_path / "p1" / "predictions" / "val_test.parquet").head(8)
    index = pd.read_parquet(data_dir / "index.parquet").set_index("id")
    transform = eval_transform(config["img_size"], config["data"]["mean"], config["data"]["std"], config["data"]["interpolation"])
    from PIL import Image

    images = torch.stack([transform(Image.open(data_dir / index.loc[i, "path"]).convert("RGB")) for i in table["id"]])
    with torch.inference_mode():
        logits = model(images)
    assert torch.allclose(logits.double(), torch.tensor(table["logit"].values), atol=1e-5)


def test_changed_config_does_not_resume_old_checkpoints(repo, data_dir, tmp_path):
    run_baseline_phase(resolved_config(repo), data_dir, tmp_path / "p1", "demo")
    cfg = resolved_config(repo, {"train": {"max_epochs": 1}})
    manifest = json.loads(run_baseline_phase(cfg, data_dir, tmp_path / "p1", "demo").read_text())
    assert manifest["metrics"]["epochs"] == 1 and manifest["metrics"]["resumed_from_step"] is None
