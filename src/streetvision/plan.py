"""Say what a run will do before its first job, and fail fast on inputs that are not there.

Called by the workflow while it parses the config (``rules/common.smk``), so a missing weights file or
data folder, an unknown domain or a model the stock miner could not serve stops the run before any job
starts, and the console shows one line per experiment: the backbone with its real parameter count,
input size, weight source, data sources and ExPLoRA.
"""

from __future__ import annotations

from pathlib import Path

from streetvision.config import ConfigError
from streetvision.data.sources import SourceSpec, source_specs


def check_data_inputs(data_cfg: dict, prefix: str) -> list[SourceSpec]:
    """Every configured source's data must exist (the synthetic demo source generates its own)."""
    specs = source_specs(data_cfg)
    for spec in specs:
        if spec.path is not None and not Path(spec.path).exists():
            raise ConfigError(f"config key '{prefix}{spec.where}.path': {spec.path} does not exist")
    unlabeled = data_cfg.get("unlabeled_path")
    if unlabeled and not Path(unlabeled).is_dir():
        raise ConfigError(f"config key '{prefix}data.unlabeled_path': {unlabeled} is not a directory")
    return specs


def check_training_mix(train_cfg: dict, specs: list[SourceSpec], prefix: str) -> None:
    probs = train_cfg["level_probs"]
    if abs(sum(probs) - 1.0) > 1e-6:
        raise ConfigError(f"config key '{prefix}train.level_probs': {probs} must sum to 1")
    weights = train_cfg.get("domain_weights") or {}
    domains = sorted({spec.domain for spec in specs})
    unknown = sorted(set(weights) - set(domains))
    if unknown:
        raise ConfigError(f"config key '{prefix}train.domain_weights': unknown domain(s) {unknown}; "
                          f"the configured sources have {domains}")


def check_hf_export(cfg: dict, prefix: str) -> None:
    """The stock miner must be able to serve the model."""
    if not cfg["hf_export"]["enabled"]:
        return
    from streetvision.bundle.hf_convert import hf_target_for_config

    try:
        hf_target_for_config(cfg["model"])
    except ConfigError as err:
        raise ConfigError(f"experiment {prefix.split('.')[1]}: {err} (or set hf_export.enabled: false)") from err


def check_submitter(cfg: dict, prefix: str) -> None:
    """Every bundle carries the NATIX card, whose submitted_by must be a real hotkey outside demo runs."""
    from streetvision.bundle.hf_card import ss58_problem

    submitted_by = cfg["bundle"]["model_card"]["submitted_by"]
    problem = None if cfg["demo"] else ss58_problem(submitted_by)
    if problem:
        raise ConfigError(f"config key '{prefix}bundle.model_card.submitted_by': {submitted_by!r} is not a hotkey "
                          f"({problem}); set your miner's ss58 hotkey (or demo: true for a run not meant for mining)")


def count_classifier_parameters(model_cfg: dict) -> int:
    """Parameters of the classifier the config builds, counted on the meta device (no memory, no weights)."""
    import torch

    from streetvision.models.spec import ClassifierSpec

    with torch.device("meta"):
        model = ClassifierSpec.from_config(model_cfg).build()
    return sum(p.numel() for p in model.parameters())


def _describe_sources(specs: list[SourceSpec]) -> str:
    def one(spec: SourceSpec) -> str:
        what = (f"synthetic {spec.synthetic['style']} scenes ({spec.synthetic['count']})" if spec.kind == "synthetic"
                else f"{spec.kind} {spec.path}")
        return f"{what} [{spec.domain}]"

    return " + ".join(one(spec) for spec in specs)


def _check_all(checks: list) -> list:
    """Run every check, so that one run names every problem instead of one per attempt."""
    from streetvision.errors import StreetvisionError

    results, problems = [], []
    for check in checks:
        try:
            results.append(check())
        except StreetvisionError as err:
            results.append(None)
            problems.append(err)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigError(f"{len(problems)} problems:\n" + "\n".join(f"  - {err}" for err in problems))
    return results


def describe_experiment(name: str, cfg: dict, *, demo: bool) -> list[str]:
    """Check one resolved experiment's inputs and return its plan line (plus a warning line if any).

    Raises ConfigError / DataSourceError / WeightsNotFoundError naming the key when an input is missing
    (a ConfigError listing them all when several are).
    """
    from streetvision.models.backbone import pretrained_weights

    prefix = f"experiments.{name}."
    model = cfg["model"]
    weights, specs, _, _ = _check_all([
        lambda: pretrained_weights(model),
        lambda: check_data_inputs(cfg["data"], prefix),
        lambda: check_hf_export(cfg, prefix),
        lambda: check_submitter(cfg, prefix),
    ])
    check_training_mix(cfg["train"], specs, prefix)
    source = {"random": "random init", "file": f"file {weights}", "hf_cache": f"HF cache {weights}"}[model["init"]]
    parameters = count_classifier_parameters(model)
    lines = [f"experiment {name}: {model['backbone']} ({parameters / 1e6:.2f}M parameters) at {model['img_size']} px, "
             f"weights: {source}; data: {_describe_sources(specs)}; "
             f"ExPLoRA {'on' if cfg['explora']['enabled'] else 'off'}"]
    if model["init"] == "random" and not demo:
        lines.append(f"WARNING: experiment {name} trains from RANDOM weights (model.init: random). That is for tests "
                     "and demos only: a miner needs a pretrained backbone (model.init: file or hf_cache).")
    return lines
