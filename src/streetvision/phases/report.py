"""Step ``report``: one summary row per experiment (results/summary.json, summary.md) and the figures
that ``snakemake --report`` collects. Light on purpose: reads the steps' outputs; no torch.

Every number is on val_test as validators would score the shipped decisions: the challenge pass (each
image through one seeded validator challenge), at the phase-2 threshold, rounded at 0.5. "As validators
see it" mixes domains with the validators' weights (``VALIDATOR_MIX``: each image of domain d weighs
w_d / n_d; each simulated challenge draws its domain with w_d); per-domain rows score each domain alone.
"""

from __future__ import annotations

from pathlib import Path

from streetvision import layout
from streetvision.domains import domain_weights
from streetvision.figures import confusion_figure, training_curves_figure
from streetvision.logs import log_result
from streetvision.metrics import ema_score_distribution, validator_metrics
from streetvision.phases import step_recorder

STEP = "report"

MAIN_COLUMNS = ["experiment", "policy", "threshold", "mcc", "accuracy", "natix_reward", "natix_reward_p10",
                "natix_reward_p90", "natix_score_ema", "clean_mcc", "scrc_coverage", "scrc_selective_risk",
                "hf_parity"]


def group_scores(test, decisions, clean, clean_decisions, column: str) -> dict[str, dict]:
    """MCC, accuracy, reward and n per value of ``column`` (domain or source) on the challenge pass, and
    the clean view's MCC beside it; an undefined MCC (one class) carries its reason instead of a 0."""
    groups = {}
    for value in sorted(test[column].unique()):
        members = (test[column] == value).to_numpy()
        metrics = validator_metrics(test["label"][members], decisions[members])
        groups[value] = {k: metrics[k] for k in ("mcc", "accuracy", "natix_reward", "n")}
        if metrics["mcc"] is None:
            groups[value]["mcc_undefined_reason"] = metrics["undefined_reason"]
        in_clean = (clean[column] == value).to_numpy()
        groups[value]["clean_mcc"] = validator_metrics(clean["label"][in_clean],
                                                       clean_decisions[in_clean])["mcc"]
    return groups


def experiment_row(experiment: str, dirs: dict[str, Path]) -> dict:
    """One experiment's summary from the folders of the steps the report declared for it (``dirs``: step ->
    folder); a step it did not declare is never read, even when an old folder of it is on disk."""
    thresholds = layout.thresholds_of(dirs["thresholds"])
    policy = layout.bundle_policy_of(dirs["bundle"])
    test = layout.predictions_of(dirs["baseline"], "val_test")
    clean = layout.predictions_of(dirs["baseline"], "val_test", view="clean")
    decisions = (test["probability"] >= thresholds["threshold"]).astype(float)
    clean_decisions = (clean["probability"] >= thresholds["threshold"]).astype(float)
    mix = domain_weights(test["domain"], None)
    overall = validator_metrics(test["label"], decisions, domains=test["domain"], domain_weights=mix)
    ema = ema_score_distribution(test["label"], decisions, domains=test["domain"], domain_weights=mix)
    row = {"experiment": experiment, "policy": policy["type"], "threshold": thresholds["threshold"],
           **{k: overall[k] for k in ("mcc", "accuracy", "natix_reward", "natix_reward_p10",
                                      "natix_reward_p90")},
           "natix_score_ema": ema["mean"], "natix_score_ema_p10": ema["p10"],
           "natix_score_ema_p90": ema["p90"],
           "clean_mcc": thresholds["val_test_clean_at_threshold"]["mcc"], "domain_mix": mix,
           "by_domain": group_scores(test, decisions, clean, clean_decisions, "domain"),
           "by_source": group_scores(test, decisions, clean, clean_decisions, "source"),
           "by_level": {}, "scrc_coverage": None, "scrc_selective_risk": None, "hf_parity": None}
    for level, metrics in sorted(layout.robustness_of(dirs["bundle"]).items()):
        row["by_level"][level] = {k: metrics[k] for k in ("mcc", "accuracy", "natix_reward", "n")}
    if "scrc" in dirs:
        scrc = layout.scrc_of(dirs["scrc"])
        row.update(scrc_coverage=scrc["val_test"]["coverage"],
                   scrc_selective_risk=scrc["val_test"]["selective_risk"])
    if "hf_export" in dirs:
        checks = layout.hf_parity_of(dirs["hf_export"]).values()
        row["hf_parity"] = ", ".join(
            f"{c['decision_mismatches']} mismatches" + (f" + {c['borderline_flips']} borderline flips"
                                                        if c.get("borderline_flips") else "")
            + f" (transformers {c['transformers']})" for c in checks)
    return row


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(value):
        if value is None or (isinstance(value, float) and value != value):
            return "—"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def summary_markdown(rows: list[dict]) -> str:
    group_columns = ["n", "mcc", "accuracy", "natix_reward", "clean_mcc"]
    def grouped(key: str, column: str) -> list[dict]:
        return [{"experiment": r["experiment"], column: value, **metrics}
                for r in rows for value, metrics in r[key].items()]

    by_domain, by_source = grouped("by_domain", "domain"), grouped("by_source", "source")
    by_level = [{"experiment": r["experiment"], "level": level.split("_")[-1], **m}
                for r in rows for level, m in r["by_level"].items()]
    mixes = "; ".join(f"{r['experiment']}: {r['domain_mix']}" for r in rows)
    intro = ("val_test as validators score it: each image through one seeded validator challenge (224x224 "
             "JPEG), decided at the phase-2 threshold. `natix_reward` is the mean NATIX reward after a "
             "100-challenge history (50/50 labels, windows drawn from val_test; p10/p90 over 1,000 "
             "histories). "
             f"Domains are mixed with the validators' weights ({mixes}): each image of domain d weighs "
             "w_d / n_d. `natix_score_ema` is the score a validator keeps: the moving average (alpha 0.05) "
             "of the reward after each of 2,000 challenges (mean over 200 histories); validators then "
             "normalise all miners' scores into weights that sum to 1, so a miner's share depends on the "
             "others. "
             "`clean_mcc` scores the source images without a challenge.")
    sections = [
        "# streetvision summary", intro, markdown_table(rows, MAIN_COLUMNS),
        "## By domain and by source (val_test challenge pass; clean_mcc: the same images without a "
        "challenge)",
        markdown_table(by_domain, ["experiment", "domain", *group_columns]),
        markdown_table(by_source, ["experiment", "source", *group_columns]),
        "MCC and the reward are undefined (—) for a domain or source whose val_test holds a single class.",
        "## By validator augmentation level (every val_test image at each level, through the bundle)",
        markdown_table(by_level, ["experiment", "level", "n", "mcc", "accuracy", "natix_reward"]),
    ]
    return "\n\n".join(sections) + "\n"


def run_report(*, manifests: dict[str, dict[str, str | Path]], out_dir: str | Path,
               workflow_dir: str | None = None) -> Path:
    """``manifests``: {experiment: {step: manifest}} of exactly what the report reads (its rule's inputs)."""
    experiments = list(manifests)
    dirs = {exp: {step: Path(path).parent for step, path in steps.items()}
            for exp, steps in manifests.items()}
    recorder = step_recorder(STEP, out_dir, ",".join(experiments), {"experiments": experiments},
                             consumes=[path for steps in manifests.values() for path in steps.values()],
                             workflow_dir=workflow_dir)
    rows = []
    for exp in experiments:
        rows.append(experiment_row(exp, dirs[exp]))
        test = layout.thresholds_of(dirs[exp]["thresholds"])["val_test_at_threshold"]
        recorder.write_figure(layout.Report.figure(exp, "confusion"),
                              confusion_figure(test, f"{exp}: val_test"))
        curves = layout.curves_of(dirs[exp]["baseline"])
        recorder.write_figure(layout.Report.figure(exp, "curves"),
                              training_curves_figure(curves, f"{exp}: phase 1 training"))
    recorder.write_json(layout.Report.SUMMARY_JSON_PATH, {"experiments": rows})
    recorder.write_text(layout.Report.SUMMARY_MD_PATH, summary_markdown(rows))
    recorder.metrics.update({"experiments": len(rows)})
    log_result(STEP, ",".join(experiments), "; ".join(
        f"{r['experiment']} val_test MCC {_fmt(r['mcc'])}, reward {_fmt(r['natix_reward'])}" for r in rows))
    return recorder.finish()


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.3f}"

