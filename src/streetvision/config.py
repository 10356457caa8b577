"""Configuration: defaults from the schema, layered overrides, validation with precise errors.

A run's config is a stack of layers: the config files in the order given (the demo's
``config/config.yaml`` only when no file is given), then ``--config`` values. Each layer holds defaults
at top level and ``experiments: {name: overrides}``; an experiment is one more layer over the defaults.
Layers merge key by key (``deep_merge``) with one exception, the *backbone rule*: a layer that changes
``model.backbone`` starts from that backbone's own architecture, so the architecture-bound keys
(``ARCHITECTURE_KEYS``) it does not set itself fall back to the schema defaults instead of being
inherited from a layer that described another backbone. The result is filled with schema defaults and
validated against ``config/schema.yaml``; an error names the offending key path.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import yaml

from streetvision.errors import StreetvisionError

SPLIT_NAMES = ("train", "val_select", "val_calib", "val_conformal", "val_test")


class ConfigError(StreetvisionError, ValueError):
    """A config problem; the message names the key."""


def load_schema(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


ARCHITECTURE_KEYS = ("backbone_kwargs", "img_size", "interpolation", "pretrained_file", "head")


def overlay(base: dict, layer: dict | None) -> dict:
    """``deep_merge(base, layer)`` plus the backbone rule of the module docstring."""
    layer = layer or {}
    merged = deep_merge(base, layer)
    layer_model = layer.get("model") if isinstance(layer.get("model"), dict) else {}
    base_model = base.get("model") if isinstance(base.get("model"), dict) else {}
    if "backbone" in layer_model and layer_model["backbone"] != base_model.get("backbone"):
        for key in ARCHITECTURE_KEYS:
            if key not in layer_model:
                merged["model"].pop(key, None)
    return merged


def merge_layers(layers: list[dict]) -> dict:
    merged: dict = {}
    for layer in layers:
        merged = overlay(merged, layer)
    return merged


def load_config_file(path: str | Path) -> dict:
    """One YAML/JSON config file; a file that is not a mapping is an error naming it."""
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path}: not valid YAML ({err})") from err
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: must be a mapping of config keys, got {type(loaded).__name__}")
    return loaded


def typed_cli_values(value):
    """Types for ``--config`` values: Snakemake parses nested ones with YAML's BaseLoader, which keeps every
    scalar a string (``scrc={alpha: 0.2}`` gives ``'0.2'``); numbers, booleans and null get their types back."""
    if isinstance(value, dict):
        return {key: typed_cli_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed_cli_values(item) for item in value]
    if not isinstance(value, str):
        return value
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "~", "none"):
        return None
    for parse in (int, float):
        try:
            return parse(value)
        except ValueError:
            pass
    return value


def fill_defaults(config: dict, schema: dict) -> dict:
    """Add every missing key that has a ``default`` in the schema (recursively through objects)."""
    filled = copy.deepcopy(config)
    for key, sub in schema.get("properties", {}).items():
        if key not in filled and "default" in sub:
            filled[key] = copy.deepcopy(sub["default"])
        if sub.get("type") == "object" and isinstance(filled.get(key, {}), dict):
            if key in filled or "properties" in sub:
                filled[key] = fill_defaults(filled.get(key, {}), sub)
    return filled


def _key_path(prefix: str, error) -> str:
    parts = [prefix] if prefix else []
    parts += [str(p) for p in error.absolute_path]
    return ".".join(parts) or "<root>"


def _describe(error, prefix: str) -> str:
    where = _key_path(prefix, error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        keys = ", ".join(f"'{where}.{k}'" if where != "<root>" else f"'{k}'" for k in extra)
        return f"unknown config key {keys} (allowed here: {', '.join(allowed)})"
    return f"config key '{where}': {error.message}"


def validate_section(config: dict, schema: dict, prefix: str = "") -> None:
    from jsonschema import Draft7Validator

    errors = sorted(Draft7Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("; ".join(_describe(e, prefix) for e in errors))


def check_split_ratios(data_cfg: dict, prefix: str) -> None:
    ratios = data_cfg["splits"]
    total = sum(ratios[name] for name in SPLIT_NAMES)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ConfigError(f"config key '{prefix}data.splits': ratios must sum to 1, they sum to {total:.6g}")


def resolve_experiments(config: dict, schema: dict) -> dict[str, dict]:
    """Validate the whole config and return ``{experiment: resolved config}``."""
    filled = fill_defaults(config, schema)
    validate_section(filled, schema)
    defaults = {k: v for k, v in config.items() if k not in ("experiments", "run_experiments")}
    experiments = filled["experiments"] or {}
    selected = config.get("run_experiments") or list(experiments)
    unknown = [name for name in selected if name not in experiments]
    if unknown:
        raise ConfigError(f"config key 'run_experiments': {unknown} not defined under 'experiments' ({sorted(experiments)})")
    if not selected:
        raise ConfigError("config key 'experiments': at least one experiment is required")
    resolved = {}
    for name in selected:
        overrides = experiments[name]
        prefix = f"experiments.{name}"
        if not isinstance(overrides, dict | type(None)):
            raise ConfigError(f"config key '{prefix}': must be a mapping of overrides, got {overrides!r}")
        merged = fill_defaults(overlay(defaults, overrides), schema)
        merged.pop("experiments", None)
        merged.pop("run_experiments", None)
        validate_section(merged, schema, prefix)
        check_split_ratios(merged["data"], prefix + ".")
        resolved[name] = merged
    return resolved
