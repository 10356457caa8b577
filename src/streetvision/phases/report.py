"""Step ``report``: one summary row per experiment (results/summary.json, summary.md) and the figures
that ``snakemake --report`` collects. Light on purpose: reads the steps' outputs; no torch.

Every number is on val_test as validators would score the shipped decisions: the challenge pass (each
image through one seeded validator challenge), at the phase-2 threshold, rounded at 0.5. "As validators
see it" mixes domains with the validators' weights (``VALIDATOR_MIX``: each image of domain d weighs
w_d / n_d; each simulated challenge draws its domain with w_d); per-domain rows score each domain alone.

Every headline number carries its 95 % bootstrap interval (``intervals``): val_test's images resampled
within each domain, 1,000 times, seeded (``BOOTSTRAP_SEED``), the same resamples for every experiment
scored on the same images; those experiments are compared with the best of them (paired bootstrap,
Holm-adjusted p-values).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from streetvision import layout
from streetvision.domains import domain_weights
from streetvision.errors import StreetvisionError
from streetvision.figures import confusion_figure, training_curves_figure
from streetvision.intervals import METRICS, bootstrap_intervals, draw_resamples, holm, paired_difference
from streetvision.io.manifest import read_manifest
from streetvision.logs import log_result
from streetvision.metrics import ema_score_distribution, validator_metrics
from streetvision.phases import step_recorder

STEP = "report"
BOOTSTRAP_SEED = 0
COMPARED = ("mcc", "natix_reward")  # the paired comparisons between experiments

MAIN_COLUMNS = ["experiment", "policy", "threshold", "mcc", "accuracy", "natix_reward", "natix_reward_p10",
                "natix_reward_p90", "natix_score_ema", "clean_mcc", "scrc_coverage", "scrc_selective_risk",
                "hf_parity"]


class ValTestBootstrap:
    """The bootstrap resamples of one val_test image set (rows in id order), drawn once and shared by every
    experiment scored on it: as validators mix domains (the headline), each domain alone, and unmixed (the
    per-level rows, scored without domain weights)."""

    def __init__(self, test: pd.DataFrame):
        self.ids = test["id"].astype(str).to_numpy()
        self.labels, self.domains = test["label"].to_numpy(), test["domain"].to_numpy()
        self.mix = domain_weights(test["domain"], None)
        self.mixed = draw_resamples(self.labels, self.domains, self.mix, rng=BOOTSTRAP_SEED)
        self.unmixed = draw_resamples(self.labels, rng=BOOTSTRAP_SEED)
        self.by_domain = {d: draw_resamples(self.labels[self.domains == d], rng=BOOTSTRAP_SEED)
                          for d in sorted(set(self.domains))}

    @staticmethod
    def key(test: pd.DataFrame) -> tuple[str, ...]:
        return tuple(sorted(test["id"].astype(str)))


def group_scores(test, decisions, clean, clean_decisions, column: str,
                 bootstrap: ValTestBootstrap | None = None) -> dict[str, dict]:
    """MCC, accuracy, reward and n per value of ``column`` (domain or source) on the challenge pass, and
    the clean view's MCC beside it; an undefined MCC (one class) carries its reason instead of a 0. With
    ``bootstrap`` (per-domain rows), the 95 % intervals beside the values."""
    groups = {}
    for value in sorted(test[column].unique()):
        members = (test[column] == value).to_numpy()
        metrics = validator_metrics(test["label"][members], decisions[members])
        groups[value] = {k: metrics[k] for k in ("mcc", "accuracy", "natix_reward", "n")}
        if bootstrap is not None and metrics["mcc"] is not None:
            groups[value].update(bootstrap_intervals(test["label"][members], decisions[members],
                                                     bootstrap.by_domain[value]))
        if metrics["mcc"] is None:
            groups[value]["mcc_undefined_reason"] = metrics["undefined_reason"]
        in_clean = (clean[column] == value).to_numpy()
        groups[value]["clean_mcc"] = validator_metrics(clean["label"][in_clean],
                                                       clean_decisions[in_clean])["mcc"]
    return groups


def val_test_of(dirs: dict[str, Path]) -> pd.DataFrame:
    """Phase 1's val_test challenge-pass predictions, in id order (the order of the shared resamples)."""
    return layout.predictions_of(dirs["baseline"], "val_test").sort_values("id", ignore_index=True)


def experiment_row(experiment: str, dirs: dict[str, Path], test: pd.DataFrame,
                   bootstrap: ValTestBootstrap) -> dict:
    """One experiment's summary from the folders of the steps the report declared for it (``dirs``: step ->
    folder); a step it did not declare is never read, even when an old folder of it is on disk. ``test``:
    its val_test predictions in id order (``val_test_of``), read once by the caller."""
    thresholds = layout.thresholds_of(dirs["thresholds"])
    policy = layout.bundle_policy_of(dirs["bundle"])
    clean = layout.predictions_of(dirs["baseline"], "val_test", view="clean")
    decisions = (test["probability"] >= thresholds["threshold"]).astype(float)
    clean_decisions = (clean["probability"] >= thresholds["threshold"]).astype(float)
    mix = domain_weights(test["domain"], None)
    overall = validator_metrics(test["label"], decisions, domains=test["domain"], domain_weights=mix)
    ema = ema_score_distribution(test["label"], decisions, domains=test["domain"], domain_weights=mix)
    row = {"experiment": experiment, "policy": policy["type"], "threshold": thresholds["threshold"],
           "val_select_mcc": read_manifest(layout.manifest_of(dirs["baseline"]))["metrics"].get(
               "val_select_mcc_best"),
           **{k: overall[k] for k in ("mcc", "accuracy", "natix_reward", "natix_reward_p10",
                                      "natix_reward_p90")},
           "natix_score_ema": ema["mean"], "natix_score_ema_p10": ema["p10"],
           "natix_score_ema_p90": ema["p90"],
           "clean_mcc": thresholds["val_test_clean_at_threshold"]["mcc"], "domain_mix": mix,
           **bootstrap_intervals(test["label"], decisions, bootstrap.mixed),
           "by_domain": group_scores(test, decisions, clean, clean_decisions, "domain", bootstrap),
           "by_source": group_scores(test, decisions, clean, clean_decisions, "source"),
           "by_level": {}, "scrc_coverage": None, "scrc_selective_risk": None, "hf_parity": None}
    for level, metrics in sorted(layout.robustness_of(dirs["bundle"]).items()):
        row["by_level"][level] = {k: metrics[k] for k in ("mcc", "accuracy", "natix_reward", "n")}
        if metrics["mcc"] is not None:
            if "answers" not in metrics:
                raise StreetvisionError(f"{dirs['bundle'] / layout.Bundle.ROBUSTNESS}: no per-image answers "
                                        "(written by an older streetvision); re-run the bundle step "
                                        "(snakemake --forcerun bundle)")
            answers = [metrics["answers"][i] for i in bootstrap.ids]
            row["by_level"][level].update(bootstrap_intervals(bootstrap.labels, answers, bootstrap.unmixed))
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


def comparisons(rows: list[dict], tests: dict[str, pd.DataFrame],
                bootstraps: dict[str, ValTestBootstrap]) -> list[dict]:
    """Experiments scored on the same val_test images, each compared with the best of them on MCC and the
    reward: paired bootstrap difference (best minus other), its interval and p-value, and the p-value
    Holm-adjusted over the group's comparisons of that metric. "Best" is ``best_on_val_select``: picked
    without looking at val_test, so the comparison is not tilted by the pick."""
    found = []
    groups: dict[int, list[dict]] = {}
    for row in rows:
        if row["mcc"] is not None:
            groups.setdefault(id(bootstraps[row["experiment"]]), []).append(row)
    for members in groups.values():
        best = best_on_val_select(members)
        bootstrap = bootstraps[best["experiment"]]
        for metric in COMPARED:
            group = []
            for other in (r for r in members if r is not best and r[metric] is not None):
                paired = paired_difference(bootstrap.labels, tests[best["experiment"]]["decision"],
                                           tests[other["experiment"]]["decision"], bootstrap.mixed, metric)
                group.append({"a": best["experiment"], "b": other["experiment"], "metric": metric,
                              "difference": best[metric] - other[metric], **paired})
            for comparison, adjusted in zip(group, holm([c["p_value"] for c in group]), strict=True):
                comparison.update(p_value_holm=adjusted,
                                  significant=adjusted is not None and adjusted < 0.05)
            found += group
    return found


def _val_select(row: dict) -> float:
    return -math.inf if row["val_select_mcc"] is None else row["val_select_mcc"]


def best_on_val_select(rows: list[dict]) -> dict:
    """The row with the highest val_select MCC (phase 1's early-stopping score); the first on ties."""
    return max(rows, key=_val_select)


def sweep_tables(rows: list[dict], sweeps: dict[str, dict | None], tests, bootstraps) -> list[dict]:
    """Per sweep: its points ranked on val_select MCC (never on val_test), each with its grid values, its
    val_test scores and intervals, and its paired comparison with the val_select-best point."""
    members: dict[str, list[dict]] = {}
    for row in rows:
        if sweeps.get(row["experiment"]):
            members.setdefault(sweeps[row["experiment"]]["sweep"], []).append(row)
    tables = []
    for name, points in members.items():
        ranked = sorted(points, key=_val_select, reverse=True)
        versus = {(c["b"], c["metric"]): c for c in comparisons(points, tests, bootstraps)}
        tables.append({"sweep": name, "ranked_on": "val_select MCC (phase 1)", "points": [
            {"experiment": r["experiment"], "values": sweeps[r["experiment"]]["values"],
             "val_select_mcc": r["val_select_mcc"], "mcc": r["mcc"], "mcc_ci": r.get("mcc_ci"),
             "natix_reward": r["natix_reward"], "natix_reward_ci": r.get("natix_reward_ci"),
             "vs_best": {metric: versus.get((r["experiment"], metric)) for metric in COMPARED}}
            for r in ranked]})
    return tables


def sweeps_markdown(tables: list[dict]) -> str:
    header = ("| rank | experiment | values | val_select MCC | val_test MCC [95 % CI] | reward [95 % CI] "
              "| MCC vs best: p (Holm) |")
    sections = []
    for table in tables:
        lines = [f"### Sweep {table['sweep']} (ranked on {table['ranked_on']}; never on val_test)", header,
                 "|---|---|---|---|---|---|---|"]
        for rank, point in enumerate(table["points"], start=1):
            values = ", ".join(f"{key}={value}" for key, value in point["values"].items())
            versus = point["vs_best"]["mcc"]
            against = "best" if versus is None else _fmt_value(versus["p_value_holm"]) + (
                "" if versus["significant"] else " (within noise)")
            cells = [str(rank), point["experiment"], values, _fmt_value(point["val_select_mcc"]),
                     with_interval(point["mcc"], point["mcc_ci"]),
                     with_interval(point["natix_reward"], point["natix_reward_ci"]), against]
            lines.append("| " + " | ".join(cells) + " |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def replicate_groups(rows: list[dict], replicates: dict[str, dict | None]) -> list[dict]:
    """Experiments run under several training seeds (``replicates: N``): each group's mean and standard
    deviation across its seeds, so that seed-to-seed variation is seen apart from val_test's sampling noise
    (the intervals)."""
    members: dict[str, list[dict]] = {}
    for row in rows:
        replicate = replicates.get(row["experiment"])
        if replicate:
            row["replicate_of"] = replicate["of"]
            members.setdefault(replicate["of"], []).append(row)
    groups = []
    for name, group in members.items():
        summary = {"of": name, "n": len(group), "experiments": [r["experiment"] for r in group]}
        for metric in METRICS:
            values = [r[metric] for r in group if r[metric] is not None]
            summary[metric] = {"mean": float(np.mean(values)) if values else None,
                               "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                               "values": values}
        groups.append(summary)
    return groups


def replicates_markdown(groups: list[dict]) -> str:
    lines = ["| replicated | seeds | " + " | ".join(f"{m} mean ± sd" for m in METRICS) + " |",
             "|" + "---|" * (2 + len(METRICS))]
    for group in groups:
        cells = [f"{group[m]['mean']:.4f} ± {group[m]['std']:.4f}" if group[m]["std"] is not None
                 else _fmt_value(group[m]["mean"]) for m in METRICS]
        lines.append(f"| {group['of']} | {group['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt_value(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def with_interval(value, interval) -> str:
    """``0.7997 [0.7412, 0.8571]``: the value and its 95 % interval."""
    if value is None or interval is None:
        return _fmt_value(value)
    return f"{value:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]"


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def cell(row, column):
        if column in METRICS and f"{column}_ci" in row:
            return with_interval(row.get(column), row[f"{column}_ci"])
        return _fmt_value(row.get(column))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row, c) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def comparisons_markdown(found: list[dict]) -> str:
    if not found:
        return "No two experiments were scored on the same val_test images: nothing to compare."
    lines = ["| best | other | metric | difference [95 % CI] | p | p (Holm) | significant at 5 % |",
             "|---|---|---|---|---|---|---|"]
    for c in found:
        p, adjusted = (_fmt_value(c[k]) for k in ("p_value", "p_value_holm"))
        difference = with_interval(c["difference"], c["ci"])
        lines.append(f"| {c['a']} | {c['b']} | {c['metric']} | {difference} | {p} | {adjusted} "
                     f"| {'yes' if c['significant'] else 'no'} |")
    return "\n".join(lines)


def summary_markdown(rows: list[dict], found: list[dict] | None = None,
                     groups: list[dict] | None = None, sweeps: list[dict] | None = None) -> str:
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
             "`clean_mcc` scores the source images without a challenge. "
             "Brackets: 95 % bootstrap intervals (val_test's images resampled within each domain, 1,000 "
             "times; the reward's also redraws its histories): val_test is a few hundred images, so a "
             "difference inside them is not a finding. The numbers come from this machine: float kernels "
             "differ between machines, so a re-run elsewhere gives other values within about these "
             "intervals.")
    sections = [
        "# streetvision summary", intro, markdown_table(rows, MAIN_COLUMNS),
        "## By domain and by source (val_test challenge pass; clean_mcc: the same images without a "
        "challenge)",
        markdown_table(by_domain, ["experiment", "domain", *group_columns]),
        markdown_table(by_source, ["experiment", "source", *group_columns]),
        "MCC and the reward are undefined (—) for a domain or source whose val_test holds a single class.",
        "## By validator augmentation level (every val_test image at each level, through the bundle)",
        markdown_table(by_level, ["experiment", "level", "n", "mcc", "accuracy", "natix_reward"]),
        "## Paired comparisons (experiments on the same val_test images, each against the best on "
        "val_select MCC)",
        "The same bootstrap resamples and histories for both sides of each row; p-values Holm-adjusted over "
        "the comparisons of each metric; \"no\": the difference is within noise at 5 %.",
        comparisons_markdown(found or []),
    ]
    if sweeps:
        sections += ["## Sweeps", sweeps_markdown(sweeps)]
    if groups:
        sections += ["## Replicates (one experiment under several training seeds; same data and splits)",
                     "Mean ± standard deviation over the seeds: how much training alone moves the numbers; "
                     "each seed's own row (with its intervals) is in the tables above.",
                     replicates_markdown(groups)]
    return "\n\n".join(sections) + "\n"


def run_report(*, manifests: dict[str, dict[str, str | Path]], out_dir: str | Path,
               replicates: dict[str, dict | None] | None = None,
               sweeps: dict[str, dict | None] | None = None, workflow_dir: str | None = None) -> Path:
    """``manifests``: {experiment: {step: manifest}} of exactly what the report reads (its rule's inputs);
    ``replicates``: {experiment: its ``replicate`` record (of, k, of_n) or None} (``config.REPLICATES``);
    ``sweeps``: {experiment: its ``sweep`` record (sweep, point, values) or None}
    (``config.sweep_points``)."""
    experiments = list(manifests)
    dirs = {exp: {step: Path(path).parent for step, path in steps.items()}
            for exp, steps in manifests.items()}
    recorder = step_recorder(STEP, out_dir, ",".join(experiments), {"experiments": experiments},
                             consumes=[path for steps in manifests.values() for path in steps.values()],
                             workflow_dir=workflow_dir)
    rows, tests, bootstraps, shared = [], {}, {}, {}
    for exp in experiments:
        test = val_test_of(dirs[exp])
        key = ValTestBootstrap.key(test)
        if key not in shared:  # experiments on the same images share (and so pair) their resamples
            shared[key] = ValTestBootstrap(test)
        bootstraps[exp] = shared[key]
        rows.append(experiment_row(exp, dirs[exp], test, bootstraps[exp]))
        tests[exp] = test.assign(decision=(test["probability"] >= rows[-1]["threshold"]).astype(float))
        test = layout.thresholds_of(dirs[exp]["thresholds"])["val_test_at_threshold"]
        recorder.write_figure(layout.Report.figure(exp, "confusion"),
                              confusion_figure(test, f"{exp}: val_test"))
        curves = layout.curves_of(dirs[exp]["baseline"])
        recorder.write_figure(layout.Report.figure(exp, "curves"),
                              training_curves_figure(curves, f"{exp}: phase 1 training"))
    found = comparisons(rows, tests, bootstraps)
    groups = replicate_groups(rows, replicates or {})
    swept = sweep_tables(rows, sweeps or {}, tests, bootstraps)
    recorder.write_json(layout.Report.SUMMARY_JSON_PATH, {"experiments": rows, "comparisons": found,
                                                          "replicate_groups": groups, "sweeps": swept})
    recorder.write_text(layout.Report.SUMMARY_MD_PATH, summary_markdown(rows, found, groups, swept))
    recorder.metrics.update({"experiments": len(rows)})
    log_result(STEP, ",".join(experiments), "; ".join(
        f"{r['experiment']} val_test MCC {_fmt(r['mcc'])}, reward {_fmt(r['natix_reward'])}" for r in rows))
    return recorder.finish()


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.3f}"

