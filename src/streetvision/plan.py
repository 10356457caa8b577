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
from streetvision.domains import GENERATED_DOMAIN


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


def check_training_mix(train_cfg: dict, specs: list[SourceSpec], prefix: str, *,
                       synthesize: bool = False) -> None:
    probs = train_cfg["level_probs"]
    if abs(sum(probs) - 1.0) > 1e-6:
        raise ConfigError(f"config key '{prefix}train.level_probs': {probs} must sum to 1")
    weights = train_cfg.get("domain_weights") or {}
    domains = sorted({spec.domain for spec in specs} | ({GENERATED_DOMAIN} if synthesize else set()))
    unknown = sorted(set(weights) - set(domains))
    if unknown:
        raise ConfigError(f"config key '{prefix}train.domain_weights': unknown domain(s) {unknown}; "
                          f"the configured sources have {domains}")


def check_synthesize(settings: dict, prefix: str) -> None:
    """Before any job: shards that each get an image, and every model the step loads, found locally."""
    from streetvision.synthesize.models import MissingModelError, check_models

    if settings["shards"] > settings["count"]:
        raise ConfigError(f"config key '{prefix}synthesize.shards': {settings['shards']} shards for "
                          f"synthesize.count {settings['count']} images would leave a shard without work")
    try:
        check_models(settings)
    except MissingModelError as err:
        raise ConfigError(f"experiment {prefix.split('.')[1]}: {err}") from err


def check_hf_export(cfg: dict, prefix: str) -> None:
    """The stock miner must be able to serve the model."""
    if not cfg["hf_export"]["enabled"]:
        return
    from streetvision.bundle.hf_convert import hf_target_for_config

    try:
        hf_target_for_config(cfg["model"])
    except ConfigError as err:
        raise ConfigError(f"experiment {prefix.split('.')[1]}: {err} "
                          "(or set hf_export.enabled: false)") from err


def check_submitter(cfg: dict, prefix: str) -> None:
    """Every bundle carries the NATIX card, whose submitted_by must be a real hotkey outside demo runs."""
    from streetvision.bundle.hf_card import ss58_problem

    submitted_by = cfg["bundle"]["model_card"]["submitted_by"]
    problem = None if cfg["demo"] else ss58_problem(submitted_by)
    if problem:
        raise ConfigError(f"config key '{prefix}bundle.model_card.submitted_by': {submitted_by!r} is not a "
                          "hotkey "
                          f"({problem}); set your miner's ss58 hotkey (or demo: true for a run not meant for "
                          "mining)")


def count_classifier_parameters(model_cfg: dict) -> int:
    """Parameters of the classifier the config builds, counted on the meta device (no memory, no weights).

    Raises ``UnknownBackboneError`` naming ``model.backbone`` when timm has no such model.
    """
    import torch

    from streetvision.models.spec import ClassifierSpec

    with torch.device("meta"):
        model = ClassifierSpec.from_config(model_cfg).build()
    return sum(p.numel() for p in model.parameters())


def _describe_sources(specs: list[SourceSpec]) -> str:
    def one(spec: SourceSpec) -> str:
        what = (f"synthetic {spec.synthetic['style']} scenes ({spec.synthetic['count']})"
                if spec.kind == "synthetic" else f"{spec.kind} {spec.path}")
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


def check_scrc_sizes(scrc_cfg: dict, prefix: str) -> None:
    """Each SCRC method is sized by its own key (calibration.scrc.METHODS); the other one is refused."""
    from streetvision.calibration.scrc import METHODS

    wanted = METHODS[scrc_cfg["method"]].size_argument
    for key in ("sequence_size", "grid_size"):
        if key != wanted and scrc_cfg[key] is not None:
            raise ConfigError(f"config key '{prefix}scrc.{key}' does not apply to scrc.method "
                              f"{scrc_cfg['method']}: its candidates are sized by scrc.{wanted}")


TRAINING_STEPS = {"explora", "baseline"}  # they build the backbone with its pretrained weights
CARD_STEPS = {"bundle", "hf_export"}  # they write the NATIX model card, whose submitted_by must be a hotkey


def describe_experiment(name: str, cfg: dict, *, demo: bool, steps: set[str] | None = None) -> list[str]:
    """Check one resolved experiment's inputs for the ``steps`` a run will reach (default: all of them) and
    return its plan line (plus warning lines if any).

    Raises ConfigError / DataSourceError / WeightsNotFoundError / UnknownBackboneError naming the key when an
    input is missing (a ConfigError listing them all when several are): the data paths for the data step,
    the weights for a training step, the hotkey for the bundle and the export, exportability for the export.
    """
    from streetvision.models.backbone import pretrained_weights
    from streetvision.steps import STEPS, final_steps, with_upstream

    whole_run = with_upstream(final_steps(cfg), cfg)
    steps = whole_run if steps is None else set(steps)
    prefix = f"experiments.{name}."
    model = cfg["model"]
    checks = {
        "parameters": lambda: count_classifier_parameters(model),  # the backbone name, whatever runs
        "specs": lambda: check_data_inputs(cfg["data"],
                                           prefix) if "ingest" in steps else source_specs(cfg["data"]),
    }
    if "synthesize" in steps:
        checks["synthesize"] = lambda: check_synthesize(cfg["synthesize"], prefix)
    if steps & TRAINING_STEPS:
        checks["weights"] = lambda: pretrained_weights(model)
    if steps & CARD_STEPS:
        checks["hotkey"] = lambda: check_submitter(cfg, prefix)
    if "scrc" in steps:
        checks["scrc"] = lambda: check_scrc_sizes(cfg["scrc"], prefix)
    found = dict(zip(checks, _check_all(list(checks.values())), strict=True))
    if "hf_export" in steps:  # after the backbone check: a model timm cannot build is not an export problem
        check_hf_export(cfg, prefix)
    specs = found["specs"]
    check_training_mix(cfg["train"], specs, prefix, synthesize=cfg["synthesize"]["enabled"])
    weights = found.get("weights")
    source = {"random": "random init", "file": f"file {weights}",
              "hf_cache": f"HF cache {weights}"}[model["init"]]
    if "weights" not in found and model["init"] != "random":
        source = f"{model['init']} (not needed by this run)"
    parameters = found["parameters"]
    lines = [f"experiment {name}: {model['backbone']} ({parameters / 1e6:.2f}M parameters) at "
             f"{model['img_size']} px, weights: {source}; data: {_describe_sources(specs)}; "
             f"ExPLoRA {'on' if cfg['explora']['enabled'] else 'off'}"]
    if cfg["synthesize"]["enabled"]:
        synth = cfg["synthesize"]
        lines[0] += (f"; synthesize {synth['count']} SDXL images in {synth['shards']} shard(s) "
                     f"(rewriter: {synth['rewriter'] or 'templates'})")
    if steps != whole_run:
        lines[0] += f"; this run reaches: {', '.join(step for step in STEPS if step in steps)}"
    if model["init"] == "random" and not demo and steps & TRAINING_STEPS:
        lines.append(f"WARNING: experiment {name} trains from RANDOM weights (model.init: random). That is "
                     "for tests "
                     "and demos only: a miner needs a pretrained backbone (model.init: file or hf_cache).")
    if demo and any(spec.kind != "synthetic" for spec in specs):
        lines.append(f"WARNING: experiment {name} is a demo run (demo: true) on real data: the hotkey is not "
                     "checked "
                     "and the model card says the model is not for mining. Set demo: false for a model to "
                     "mine with.")
    return lines
