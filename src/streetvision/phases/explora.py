"""Step ``explora`` (phase 4): run ExPLoRA, export the merged backbone, prove the export by reloading it,
probe it."""

from __future__ import annotations

import copy
from pathlib import Path

from streetvision import layout
from streetvision.config import section_settings
from streetvision.logs import log_result
from streetvision.models.backbone import (
    BackboneSpec,
    any_size_copy,
    build_backbone,
    count_parameters,
    data_config,
    patch_size,
)
from streetvision.phases import step_recorder
from streetvision.train.checkpoints import restore_checkpoint
from streetvision.train.explora import (
    TRAINING_REVISION,
    DinoSettings,
    ExploraModule,
    LoraSettings,
    MultiCrop,
    add_lora,
    check_adaptation_visible,
    embed,
    explora_frame,
    explora_loader,
    explora_views,
    fixed_batch,
    linear_probe,
    local_crop_side,
    validate_export,
)
from streetvision.train.tracking import log_headline
from streetvision.train.trainer import (
    build_trainer,
    export_curves,
    fit_resumable,
    loader_workers,
    start_training_phase,
    training_observers,
)

STEP = "explora"


def run_explora(*, cfg: dict, data_dir: str | Path, out_dir: str | Path, experiment: str, gpus: int = 0,
                threads: int | None = None, workflow_dir: str | None = None) -> Path | None:
    model_cfg, ex_cfg = cfg["model"], cfg["explora"]
    out_dir = Path(out_dir)
    upstream = [layout.manifest_of(data_dir)]
    workers = loader_workers(ex_cfg["num_workers"], threads)
    accelerator, devices = start_training_phase(
        STEP, out_dir, {**cfg, "training_revision": TRAINING_REVISION}, seed=ex_cfg["seed"], gpus=gpus,
        cpu_devices=ex_cfg["cpu_devices"], upstream=upstream, threads=threads, loader_workers=workers)
    recorder = step_recorder(STEP, out_dir, experiment, cfg, consumes=upstream, seed=ex_cfg["seed"],
                             workflow_dir=workflow_dir, device=f"{accelerator}x{devices}",
                             scratch=layout.Training.SCRATCH)

    index = layout.load_index(data_dir)
    base = build_backbone(model_cfg)
    spec = data_config(base, model_cfg["img_size"])
    frame = explora_frame(index, ex_cfg["splits"])
    img_size = model_cfg["img_size"]
    local_size = local_crop_side(ex_cfg["local_crop_size"], img_size, patch_size(base))
    crops = MultiCrop(img_size, local_size, ex_cfg["n_local_crops"],
                      ex_cfg["global_scale"], ex_cfg["local_scale"], spec["mean"], spec["std"])
    views = explora_views(crops, ex_cfg["challenge_views"], seed=ex_cfg["seed"])
    loader = explora_loader(index, ex_cfg["splits"], views, ex_cfg["batch_size"], workers,
                            prefetch_factor=ex_cfg["prefetch_factor"], pin_memory=accelerator == "gpu")
    lora, dino = section_settings(LoraSettings, ex_cfg), section_settings(DinoSettings, ex_cfg)
    # small local crops pass through the student at their own size (a fraction of the tokens)
    any_size = local_size != img_size and ex_cfg["n_local_crops"] > 0
    student = any_size_copy(base, model_cfg) if any_size else base
    module = ExploraModule(add_lora(copy.deepcopy(student), lora), dino)
    trackers, progress = training_observers(STEP, experiment, cfg, "explora", out_dir, workflow_dir,
                                            loss="explora/loss")
    trainer, checkpoint = build_trainer(out_dir, accelerator=accelerator, devices=devices,
                                        max_epochs=ex_cfg["max_epochs"], precision=ex_cfg["precision"],
                                        find_unused_parameters=True, trackers=trackers,
                                        extra_callbacks=progress,
                                        checkpoint_interval_minutes=ex_cfg["checkpoint_interval_minutes"])
    record = fit_resumable(trainer, checkpoint, module, out_dir, restore="last", train_dataloaders=loader)
    if record is None:  # DDP ranks > 0: rank 0 exports
        return None
    restore_checkpoint(module, out_dir, record)  # the teacher too

    teacher = module.teacher.cpu()  # the EMA teacher is DINO's output model
    batch = fixed_batch(frame, spec)
    adaptation = (embed(teacher, batch) - embed(base, batch)).abs().max().item()
    check_adaptation_visible(adaptation, ex_cfg["export_tolerance"])
    merged = copy.deepcopy(teacher).merge_and_unload()
    backbone_spec = BackboneSpec.from_config(model_cfg)
    saved = recorder.write_tensors(layout.Explora.BACKBONE, merged.state_dict(), {"format": "timm-backbone"})
    load_back = validate_export(teacher, saved, backbone_spec, batch, ex_cfg["export_tolerance"])
    params = {"backbone_trainable": count_parameters(module.student)["trainable"],  # LoRA + unfrozen blocks
              "backbone_total": count_parameters(base)["total"],
              "dino_head": count_parameters(module.student_head)["trainable"]}  # discarded after phase 4
    summary = {
        "load_back_max_abs_diff": load_back, "adaptation_max_abs_change": adaptation, "parameters": params,
        "trainable_fraction_of_backbone": params["backbone_trainable"] / params["backbone_total"],
        "images_used": {split: int((frame["split"] == split).sum()) for split in ex_cfg["splits"]},
        "global_step": record["global_step"], "epochs": record["epochs"],
        "resumed_from_step": record["resumed_from_step"],
    }
    if ex_cfg["linear_probe"]:  # evaluation only, after the backbone is saved
        summary["linear_probe_val_test_mcc"] = {
            "before": linear_probe(base, index, spec, ex_cfg["probe_max_train"], ex_cfg["seed"]),
            "after": linear_probe(merged, index, spec, ex_cfg["probe_max_train"], ex_cfg["seed"]),
        }
    recorder.write_json(layout.Explora.BACKBONE_CONFIG, {**backbone_spec.to_record(), "data": spec})
    recorder.write_json(layout.Explora.SUMMARY, summary)
    export_curves(recorder)
    recorder.metrics.update(summary)
    probe = summary.get("linear_probe_val_test_mcc", {})
    recorder.metrics["tracking"] = log_headline(trackers, {
        "adaptation_max_abs_change": adaptation, "load_back_max_abs_diff": load_back,
        "trainable_fraction_of_backbone": summary["trainable_fraction_of_backbone"],
        "linear_probe_val_test_mcc_before": probe.get("before"),
        "linear_probe_val_test_mcc_after": probe.get("after"),
    }, step=record["global_step"])
    log_result(STEP, experiment, f"{params['backbone_trainable']:,} of {params['backbone_total']:,} backbone "
                                 f"parameters trained; load-back max |Δ| {load_back:.1e}, "
                                 f"adaptation {adaptation:.3g}")
    return recorder.finish()
