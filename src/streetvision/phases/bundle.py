"""Step ``bundle`` (phase 6): assemble the servable bundle, reload it verified, prove it reproduces phase 1 on
the challenge pass (the 224x224 JPEGs a miner receives), and score it through each validator level."""

from __future__ import annotations

from pathlib import Path

from streetvision import layout
from streetvision.bundle import files
from streetvision.bundle.export import build_policy, check_parity, model_card, robustness, write_bundle
from streetvision.bundle.load import load_bundle
from streetvision.bundle.policy import needs_gate
from streetvision.logs import log_result
from streetvision.phases import step_recorder, val_test_challenges

STEP = "bundle"


def bundle_members(policy: dict, baseline_dir: Path, gate_dir: Path | None) -> dict[str, tuple[str, bytes]]:
    """The model (and, for a gate-scored SCRC policy, the gate) as bundle files: name -> (role, bytes)."""
    members = {files.WEIGHTS: ("weights", (baseline_dir / layout.Baseline.MODEL).read_bytes()),
               files.MODEL_CONFIG: ("model_config",
                                    (baseline_dir / layout.Baseline.MODEL_CONFIG).read_bytes())}
    if needs_gate(policy):
        members[files.GATE_WEIGHTS] = ("gate_weights", (gate_dir / layout.Gate.WEIGHTS).read_bytes())
        members[files.GATE_CONFIG] = ("gate_config", (gate_dir / layout.Gate.CONFIG).read_bytes())
    return members


def run_bundle(*, cfg: dict, data_dir, baseline_dir, thresholds_dir, scrc_dir=None, gate_dir=None, out_dir,
               experiment: str, workflow_dir: str | None = None) -> Path:
    """``cfg`` holds the ``bundle``, ``challenge`` and ``demo`` sections; a ``threshold`` policy needs phases
    1 and 2 only, the ``scrc`` policy also phase 5 (and the gate when it scores the selection)."""
    bundle_cfg, seed = cfg["bundle"], cfg["challenge"]["seed"]
    data_dir, baseline_dir, out_dir = Path(data_dir), Path(baseline_dir), Path(out_dir)
    sources = [layout.manifest_of(d) for d in (baseline_dir, thresholds_dir, gate_dir, scrc_dir) if d]
    recorder = step_recorder(STEP, out_dir, experiment, cfg, workflow_dir=workflow_dir,
                             consumes=[layout.manifest_of(data_dir), *sources])  # the index: parity images
    policy = build_policy(bundle_cfg["policy"], layout.thresholds_of(thresholds_dir),
                          layout.scrc_of(scrc_dir) if bundle_cfg["policy"] == "scrc" else None)
    card = model_card(bundle_cfg["model_card"], layout.model_record_of(baseline_dir), demo=cfg["demo"])
    write_bundle(recorder.folder(layout.Bundle.DIR), policy, card, bundle_members(policy, baseline_dir,
                                                                                  gate_dir), sources)
    recorder.register_tree(layout.Bundle.DIR)

    detector = load_bundle(layout.bundle_dir_of(out_dir))
    test, images = val_test_challenges(data_dir, baseline_dir, seed)
    parity = check_parity(detector, images, layout.predictions_of(baseline_dir, "val_test"), policy)
    robust = robustness(detector, test, bundle_cfg["robustness_levels"], seed)
    recorder.write_json(layout.Bundle.PARITY, {**parity, "view": "challenge pass (224x224 JPEGs)"})
    recorder.write_json(layout.Bundle.ROBUSTNESS, robust)
    recorder.metrics.update({
        "policy": policy["type"], "parity": parity,
        "val_test_by_level": {level: {k: m[k] for k in ("mcc", "accuracy",
                                                        "natix_reward")} for level, m in robust.items()},
    })
    by_level = ", ".join(f"L{level.split('_')[-1]} {_fmt(m['mcc'])}" for level, m in robust.items())
    log_result(STEP, experiment, f"{policy['type']} policy verified on the challenge pass (parity max |Δp| "
                                 f"{parity['max_abs_probability_diff']:.1e}); val_test MCC by level: "
                                 f"{by_level}")
    return recorder.finish()


def _fmt(value) -> str:
    return "undefined" if value is None else f"{value:.2f}"
