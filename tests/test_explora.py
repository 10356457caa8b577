"""Phase 4 ExPLoRA on a tiny ViT: leakage, export load-back (incl. a broken save), adapters."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import ingest_and_index, resolved_config
from PIL import Image
from safetensors.torch import load_file, save_file

from streetvision.config import section_settings
from streetvision.layout import load_index
from streetvision.models.backbone import BackboneSpec, build_backbone
from streetvision.phases import explora as explora_step
from streetvision.train.explora import (
    ExportValidationError,
    LeakageError,
    LoraSettings,
    add_lora,
    explora_frame,
    fixed_batch,
    validate_export,
)

EVAL_SPLITS = {"val_select", "val_calib", "val_conformal", "val_test"}
# Small but lively: a fast-moving teacher so the adapter visibly changes the embeddings.
EXPLORA = {"enabled": True, "out_dim": 64, "head_hidden": 64, "head_bottleneck": 16, "n_local_crops": 2,
           "max_epochs": 2, "batch_size": 32, "num_workers": 0, "probe_max_train": 200, "lora_rank": 4,
           "lr": 0.01, "ema_momentum": 0.5}


@pytest.fixture(scope="module")
def config(repo):
    return resolved_config(repo, {"explora": EXPLORA, "data": {"synthetic": {"unlabeled_count": 40}}})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, config):
    out = tmp_path_factory.mktemp("explora") / "data"
    ingest_and_index(cfg={"data": config["data"]}, out_dir=out, experiment="demo")
    return out


@pytest.fixture(scope="module")
def phase_run(tmp_path_factory, config, data_dir):
    """Run the phase once, recording every image it opens and whether the linear probe opened it."""
    out = tmp_path_factory.mktemp("explora") / "p4"
    opened, in_probe = [], [False]
    original_open, original_probe = Image.open, explora_step.linear_probe

    def recording_open(path, *args, **kwargs):
        if isinstance(path, str | Path):  # files; in-memory JPEGs of the challenges made from them are not
            opened.append((str(path), in_probe[0]))
        return original_open(path, *args, **kwargs)

    def flagged_probe(*args, **kwargs):
        in_probe[0] = True
        try:
            return original_probe(*args, **kwargs)
        finally:
            in_probe[0] = False

    def record_training_input(module, inputs):
        if type(module).__name__ == "PatchEmbed" and module.training:
            training_inputs.append(tuple(inputs[0].shape))

    training_inputs = []  # the shape of every batch the backbones' patch embeddings see in training
    hook = torch.nn.modules.module.register_module_forward_pre_hook(record_training_input)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Image, "open", recording_open)
            mp.setattr(explora_step, "linear_probe", flagged_probe)
            manifest = explora_step.run_explora(cfg={"model": config["model"], "explora": config["explora"]},
                                                data_dir=data_dir, out_dir=out, experiment="demo")
    finally:
        hook.remove()
    return out, json.loads(manifest.read_text()), opened, training_inputs


def split_of_paths(data_dir):
    """Every file of an indexed image (the ingested one, the validators' cache copy, the training store's)
    -> its split."""
    index = load_index(data_dir)
    return {os.path.normpath(path): split for column in ("path", "challenge_path", "train_path")
            for path, split in zip(index[column], index["split"], strict=True)}


@pytest.mark.slow
def test_explora_never_opens_an_evaluation_image(phase_run, data_dir):
    _, manifest, opened, _ = phase_run
    splits = split_of_paths(data_dir)
    adaptation = {splits[os.path.normpath(p)] for p, probing in opened if not probing}
    assert adaptation <= {"train", "unlabeled"} and "unlabeled" in adaptation
    # Only the linear probe (an evaluation after export; fitted on train) reads val_test.
    assert {splits[os.path.normpath(p)] for p, probing in opened if probing} <= {"train", "val_test"}
    assert manifest["metrics"]["images_used"]["unlabeled"] == 40


@pytest.mark.slow
def test_each_step_runs_the_globals_and_the_locals_in_one_forward_each(phase_run):
    """Per step: the teacher's and the student's pass over both global crops at 224 px, and one student pass
    over every local crop at its own size (DINO's 96/224 in whole 28 px patches: 84 px)."""
    *_, inputs = phase_run
    batch, n_local = EXPLORA["batch_size"], EXPLORA["n_local_crops"]
    assert set(inputs) == {(2 * batch, 3, 224, 224), (n_local * batch, 3, 84, 84)}
    assert inputs.count((2 * batch, 3, 224, 224)) == 2 * inputs.count((n_local * batch, 3, 84, 84)) > 0


def test_a_local_crop_size_off_the_patch_grid_is_a_config_error():
    from streetvision.config import ConfigError
    from streetvision.train.explora import local_crop_side

    assert local_crop_side(None, 224, 14) == 98 and local_crop_side(None, 224, 16) == 96
    with pytest.raises(ConfigError, match="explora.local_crop_size.*100 px.*14 px patches"):
        local_crop_side(100, 224, 14)


@pytest.mark.parametrize("split", sorted(EVAL_SPLITS))
def test_explora_data_refuses_evaluation_splits(split, data_dir):
    index = pd.read_parquet(data_dir / "index.parquet")
    with pytest.raises(LeakageError, match=f"refused split\\(s\\) \\['{split}'\\]"):
        explora_frame(index, ["train", split])


@pytest.mark.slow
def test_export_reloads_exactly_and_the_adapter_changed_outputs(phase_run, config):
    out, manifest, _, _ = phase_run
    m = manifest["metrics"]
    assert m["load_back_max_abs_diff"] <= config["explora"]["export_tolerance"]
    assert m["adaptation_max_abs_change"] > 100 * config["explora"]["export_tolerance"]
    assert set(m["linear_probe_val_test_mcc"]) == {"before", "after"}
    assert 0 < m["parameters"]["backbone_trainable"] < m["parameters"]["backbone_total"]
    assert 0 < m["trainable_fraction_of_backbone"] < 1


@pytest.mark.slow
def test_a_broken_save_is_caught(phase_run, config, data_dir, tmp_path):
    """Saving the unfrozen block from the base model instead of the trained one must fail validation."""
    out, _, _, _ = phase_run
    spec = BackboneSpec.from_config(config["model"])
    good = load_file(out / "backbone.safetensors")
    reference = build_backbone(config["model"])
    reference.load_state_dict(good)
    batch = fixed_batch(explora_frame(pd.read_parquet(data_dir / "index.parquet").assign(
        path=lambda f: [str(data_dir / p) for p in f["path"]]), ["train"]),
        {"img_size": 224, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic"})
    assert validate_export(reference, out / "backbone.safetensors", spec, batch, 1e-4) <= 1e-4
    base = build_backbone(config["model"]).state_dict()
    last = len(reference.blocks) - 1
    broken = {k: (base[k] if k.startswith(f"blocks.{last}.") else v).contiguous() for k, v in good.items()}
    save_file(broken, tmp_path / "broken.safetensors")
    with pytest.raises(ExportValidationError, match="differs from the adapted model"):
        validate_export(reference, tmp_path / "broken.safetensors", spec, batch, 1e-4)
    missing = {k: v for k, v in good.items() if not k.startswith(f"blocks.{last}.")}
    save_file(missing, tmp_path / "missing.safetensors")
    with pytest.raises(ExportValidationError, match="does not load"):
        validate_export(reference, tmp_path / "missing.safetensors", spec, batch, 1e-4)


def test_lora_goes_on_all_blocks_but_the_unfrozen_ones(config):
    backbone = build_backbone(config["model"])
    model = add_lora(backbone, section_settings(LoraSettings, {**config["explora"], "unfreeze_blocks": 1}))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("blocks.0.attn.qkv.lora_A" in n for n in trainable)
    assert not any("blocks.1.attn.qkv.lora_" in n for n in trainable)  # block 1 is the unfrozen last one
    assert any(".blocks.1.mlp.fc1.weight" in n for n in trainable)
    assert not any(".blocks.0.mlp.fc1.weight" in n for n in trainable)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 32)
    with pytest.raises(ValueError, match="leaves no block for LoRA"):
        add_lora(build_backbone(config["model"]), section_settings(LoraSettings, {**config["explora"],
                                                                                  "unfreeze_blocks": 2}))


def test_mae_objective_is_a_clear_config_error(repo):
    from streetvision.config import ConfigError

    with pytest.raises(ConfigError, match=r"config key 'experiments\.demo\.explora\.objective'"):
        resolved_config(repo, {"experiments": {"demo": {"explora": {"objective": "mae"}}}})


@pytest.mark.slow
def test_dora_adapters_train_in_explora_and_merge_into_the_export(config, data_dir, tmp_path, monkeypatch):
    """explora.use_dora: PEFT's DoRA layers (a magnitude vector per adapted projection) train, and the
    merged backbone passes the phase's own load-back check."""
    seen = []
    real_add = explora_step.add_lora

    def recording_add(backbone, lora):
        adapted = real_add(backbone, lora)
        seen.append([name for name, _ in adapted.named_parameters() if "lora_" in name])
        return adapted

    monkeypatch.setattr(explora_step, "add_lora", recording_add)
    cfg = {**config["explora"], "use_dora": True, "max_epochs": 1}
    manifest = json.loads(explora_step.run_explora(cfg={"model": config["model"], "explora": cfg},
                                                   data_dir=data_dir, out_dir=tmp_path / "p4",
                                                   experiment="demo").read_text())
    assert seen and any("lora_magnitude_vector" in name for name in seen[0])
    assert manifest["metrics"]["load_back_max_abs_diff"] <= cfg["export_tolerance"]
    weights = load_file(tmp_path / "p4" / "backbone.safetensors")
    assert not any("lora" in name for name in weights)
