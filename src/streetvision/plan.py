"""Say what a run will do before its first job, and fail fast on inputs that are not there.

Called by the workflow while it parses the config (``rules/common.smk``), so a missing weights file or
data folder stops the run before any job starts, and the console shows one line per experiment: the
backbone with its real parameter count, input size, weight source, data source and ExPLoRA.
"""

from __future__ import annotations

from pathlib import Path

from streetvision.config import ConfigError


def check_data_inputs(data_cfg: dict, prefix: str) -> None:
    """Every configured data path must exist (the synthetic demo source generates its own)."""
    if data_cfg["source"] != "synthetic":
        path = data_cfg.get("path")
        if not path:
            raise ConfigError(f"config key '{prefix}data.path' is required for data.source '{data_cfg['source']}'")
        if not Path(path).exists():
            raise ConfigError(f"config key '{prefix}data.path': {path} does not exist")
    unlabeled = data_cfg.get("unlabeled_path")
    if unlabeled and not Path(unlabeled).is_dir():
        raise ConfigError(f"config key '{prefix}data.unlabeled_path': {unlabeled} is not a directory")


def count_classifier_parameters(model_cfg: dict) -> int:
    """Parameters of the classifier the config builds, counted on the meta device (no memory, no weights)."""
    import torch

    from streetvision.models.spec import ClassifierSpec

    with torch.device("meta"):
        model = ClassifierSpec.from_config(model_cfg).build()
    return sum(p.numel() for p in model.parameters())


def _data_description(data_cfg: dict) -> str:
    if data_cfg["source"] == "synthetic":
        return f"synthetic demo scenes ({data_cfg['synthetic']['count']})"
    return f"{data_cfg['source']} {data_cfg['path']}"


def describe_experiment(name: str, cfg: dict, *, demo: bool) -> list[str]:
    """Check one resolved experiment's inputs and return its plan line (plus a warning line if any).

    Raises ConfigError / WeightsNotFoundError naming the key when an input is missing.
    """
    from streetvision.models.backbone import pretrained_weights

    prefix = f"experiments.{name}."
    model = cfg["model"]
    check_data_inputs(cfg["data"], prefix)
    weights = pretrained_weights(model)
    source = {"random": "random init", "file": f"file {weights}", "hf_cache": f"HF cache {weights}"}[model["init"]]
    parameters = count_classifier_parameters(model)
    lines = [f"experiment {name}: {model['backbone']} ({parameters / 1e6:.2f}M parameters) at {model['img_size']} px, "
             f"weights: {source}; data: {_data_description(cfg['data'])}; "
             f"ExPLoRA {'on' if cfg['explora']['enabled'] else 'off'}"]
    if model["init"] == "random" and not demo:
        lines.append(f"WARNING: experiment {name} trains from RANDOM weights (model.init: random). That is for tests "
                     "and demos only: a miner needs a pretrained backbone (model.init: file or hf_cache).")
    return lines
