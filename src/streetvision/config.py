"""Configuration: defaults from the schema, per-experiment overrides, validation with precise errors.

The config file holds the defaults at top level and ``experiments: {name: overrides}``. Each
experiment's resolved config is ``deep_merge(defaults, overrides)``, filled with schema defaults and
validated against ``config/schema.yaml``; an error names the offending key path.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import yaml

SPLIT_NAMES = ("train", "val_select", "val_calib", "val_conformal", "val_test")


class ConfigError(ValueError):
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
    validate_section(fill_defaults(config, schema), schema)
    defaults = {k: v for k, v in config.items() if k not in ("experiments", "run_experiments")}
    experiments = config.get("experiments") or {}
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
        merged = fill_defaults(deep_merge(defaults, overrides or {}), schema)
        merged.pop("experiments", None)
        merged.pop("run_experiments", None)
        validate_section(merged, schema, prefix)
        check_split_ratios(merged["data"], prefix + ".")
        resolved[name] = merged
    return resolved
