"""Phase 1 end to end on tiny data (fast dev runs of the real code path)."""

import json

import pandas as pd
import pytest
import torch
from helpers import ingest_and_index, resolved_config
from safetensors.torch import load_file

from streetvision.io.manifest import verify_tree
from streetvision.layout import Baseline, Training, load_index
from streetvision.phases.baseline import run_baseline

pytestmark = pytest.mark.slow


def sections(cfg):
    return {"model": cfg["model"], "train": cfg["train"], "challenge": cfg["challenge"]}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, repo):
    out = tmp_path_factory.mktemp("data") / "data"
    ingest_and_index(cfg={"data": resolved_config(repo)["data"]}, out_dir=out, experiment="demo")
    return out


def test_phase1_fast_dev_run_writes_every_output(repo, data_dir, tmp_path):
    cfg = resolved_config(repo)
    manifest_path = run_baseline(cfg=sections(cfg), data_dir=data_dir, out_dir=tmp_path / "p1",
                                 experiment="demo")
    manifest = json.loads(manifest_path.read_text())
    listed = {a["path"] for a in manifest["artifacts"]}
    assert {"model.safetensors", "model_config.json", "metrics.json", "curves.csv"} <= listed
    assert {f"predictions/{s}.parquet" for s in Baseline.PREDICTED_SPLITS} <= listed
    assert {f"features/{s}.safetensors" for s in Baseline.FEATURE_SPLITS} <= listed
    index = pd.read_parquet(data_dir / "index.parquet")
    for split in Baseline.PREDICTED_SPLITS:
        for view in Baseline.VIEWS:
            table = pd.read_parquet(tmp_path / "p1" / Baseline.predictions(split, view))
            assert list(table.columns)[:6] == ["id", "label", "domain", "source", "logit", "probability"]
            assert table["id"].tolist() == index.loc[index["split"] == split, "id"].tolist()
            assert torch.allclose(torch.sigmoid(torch.tensor(table["logit"].values)),
                                  torch.tensor(table["probability"].values))
        challenge = pd.read_parquet(tmp_path / "p1" / Baseline.predictions(split))
        assert set(challenge["level"]) <= {0, 1, 2, 3} and {"CS", "CC", "JPEG", "GNC",
                                                            "GB"} <= set(challenge.columns)
    features = load_file(tmp_path / "p1" / "features" / "val_test.safetensors")["features"]
    assert features.shape == (int((index["split"] == "val_test").sum()), 32)
    assert manifest["metrics"]["global_step"] > 0 and manifest["metrics"]["resumed_from_step"] is None
    consumed = [(tmp_path / "p1" / c["path"]).resolve() for c in manifest["consumed"]]
    assert consumed == [(data_dir / "manifest.json").resolve()]
    assert verify_tree(tmp_path / "p1")[1] == []


def test_exported_weights_reproduce_the_predictions(repo, data_dir, tmp_path):
    from streetvision.data.views import EvaluationChallenge, samples_of
    from streetvision.models.spec import ClassifierSpec

    run_baseline(cfg=sections(resolved_config(repo)), data_dir=data_dir, out_dir=tmp_path / "p1",
                 experiment="demo")
    config = json.loads((tmp_path / "p1" / "model_config.json").read_text())
    spec = ClassifierSpec.from_record(config)
    model = spec.load(tmp_path / "p1" / "model.safetensors")
    model.eval()
    table = pd.read_parquet(tmp_path / "p1" / "predictions" / "val_test.parquet").head(8)
    rows = load_index(data_dir).set_index("id", drop=False).loc[table["id"]]
    challenge = EvaluationChallenge(resolved_config(repo)["challenge"]["seed"], spec.eval_transform())
    images = torch.stack([challenge(sample) for sample in samples_of(rows)])  # the challenge pass, rebuilt
    with torch.inference_mode():
        logits = model(images)
    assert torch.allclose(logits.double(), torch.tensor(table["logit"].values), atol=1e-5)


def test_changed_config_does_not_resume_old_checkpoints(repo, data_dir, tmp_path):
    run_baseline(cfg=sections(resolved_config(repo)), data_dir=data_dir, out_dir=tmp_path / "p1",
                 experiment="demo")
    cfg = resolved_config(repo, {"train": {"max_epochs": 1}})
    manifest = json.loads(run_baseline(cfg=sections(cfg), data_dir=data_dir, out_dir=tmp_path / "p1",
                                       experiment="demo").read_text())
    assert manifest["metrics"]["epochs"] == 1 and manifest["metrics"]["resumed_from_step"] is None


def test_accumulation_clipping_and_label_smoothing_reach_the_optimiser(repo, data_dir, tmp_path, monkeypatch):
    """Through run_baseline: two batches per optimiser step (half the steps), every step's gradients
    clipped to the configured norm, and the loss fitted against smoothed targets."""
    from streetvision.train import classifier_module

    clipped, targets = [], []
    real_clip, real_smoothed = torch.nn.utils.clip_grad_norm_, classifier_module.smoothed

    def recording_clip(parameters, max_norm, *args, **kwargs):
        clipped.append(max_norm)
        return real_clip(parameters, max_norm, *args, **kwargs)

    def recording_smoothed(labels, smoothing):
        targets.append(real_smoothed(labels, smoothing))
        return targets[-1]

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    monkeypatch.setattr(classifier_module, "smoothed", recording_smoothed)
    plain = json.loads(run_baseline(cfg=sections(resolved_config(repo, {"train": {"max_epochs": 1}})),
                                    data_dir=data_dir, out_dir=tmp_path / "plain", experiment="demo").read_text())
    assert not clipped and all(set(t.unique().tolist()) <= {0.0, 1.0} for t in targets)
    targets.clear()
    cfg = resolved_config(repo, {"train": {"max_epochs": 1, "accumulate_grad_batches": 2, "gradient_clip_val": 0.5,
                                           "label_smoothing": 0.2}})
    tuned = json.loads(run_baseline(cfg=sections(cfg), data_dir=data_dir, out_dir=tmp_path / "tuned",
                                    experiment="demo").read_text())
    steps = plain["metrics"]["global_step"]
    assert tuned["metrics"]["global_step"] == (steps + 1) // 2  # one optimiser step per two batches
    assert clipped and set(clipped) == {0.5} and len(clipped) == tuned["metrics"]["global_step"]
    smoothed_targets = torch.cat(targets)
    assert torch.allclose(smoothed_targets[smoothed_targets < 0.5], torch.tensor(0.1))
    assert torch.allclose(smoothed_targets[smoothed_targets > 0.5], torch.tensor(0.9))


def test_ema_weights_are_what_phase_1_validates_checkpoints_and_exports(repo, data_dir, tmp_path):
    """train.ema_decay: the checkpoint's weights are the average (the training weights and the averaging
    state beside them, for a resume), and the exported model is exactly the averaged one."""
    from streetvision.train.checkpoints import load_training_state

    cfg = resolved_config(repo, {"train": {"max_epochs": 2, "ema_decay": 0.5}})
    manifest = json.loads(run_baseline(cfg=sections(cfg), data_dir=data_dir, out_dir=tmp_path / "p1",
                                       experiment="demo").read_text())
    checkpoints = tmp_path / "p1" / Training.CHECKPOINTS
    state = load_training_state(checkpoints / Training.LAST)
    assert {"current_model_state", "averaging_state"} <= set(state)
    assert int(state["averaging_state"]["n_averaged"]) == manifest["metrics"]["global_step"]
    exported = load_file(tmp_path / "p1" / Baseline.MODEL)
    restored = json.loads((tmp_path / "p1" / Training.DONE).read_text())["restore_checkpoint"] or Training.LAST
    averaged = load_training_state(checkpoints / restored)["state_dict"]
    for name, tensor in exported.items():
        assert torch.equal(tensor, averaged[f"model.{name}"]), name
    training = state["current_model_state"]
    assert any(not torch.equal(training[k], state["state_dict"][k]) for k in training if k.startswith("model."))


def test_lora_fine_tuning_with_ema_and_accumulation_exports_plain_weights_the_miner_reproduces(repo, tmp_path):
    """model.freeze lora (+ EMA, accumulation) through the real runners to the Hugging Face export: only the
    adapters and the head train, the bundle and the HF repo hold merged plain weights, and the export's
    parity check (its own gate: the step fails otherwise) holds in both transformers versions it tries."""
    from helpers import run_tiny_steps

    from streetvision import layout

    cfg = resolved_config(repo, {"model": {"freeze": "lora", "lora": {"rank": 2, "use_rslora": True}},
                                 "train": {"max_epochs": 2, "ema_decay": 0.9, "accumulate_grad_batches": 2}})
    dirs = run_tiny_steps(tmp_path / "results", cfg)
    metrics = json.loads((dirs["baseline"] / "manifest.json").read_text())["metrics"]
    assert 0 < metrics["parameters"]["trainable"] < metrics["parameters"]["total"] / 2
    weights = load_file(dirs["baseline"] / Baseline.MODEL)
    assert not any("lora" in name or "base_layer" in name for name in weights)
    plain = json.loads((dirs["baseline"] / Baseline.MODEL_CONFIG).read_text())
    from streetvision.models.spec import ClassifierSpec

    ClassifierSpec.from_record(plain).load(dirs["baseline"] / Baseline.MODEL)  # strict: plain architecture
    parity = layout.hf_parity_of(dirs["hf_export"])
    assert all(check["decision_mismatches"] == 0 for check in parity.values())
    from huggingface_hub import ModelCard  # the card's model-index: phase 6's val_test scores and intervals

    card = ModelCard.load(dirs["hf_export"] / layout.HFExport.REPO / "README.md")
    assert card.data.base_model is None  # random init: no pretrained backbone to name
    robustness = layout.robustness_of(dirs["bundle"])
    scored = {(r.dataset_name, r.metric_type): r for r in card.data.eval_results}
    from streetvision.phases.hf_export import set_name

    assert len(card.data.eval_results) == 3 * len(robustness)
    for level, row in robustness.items():
        result = scored[(set_name(level), "accuracy")]
        assert result.metric_value == pytest.approx(row["accuracy"]) and "95 % CI [" in result.metric_name
