"""Configuration: defaults from the schema, layered overrides, validation with precise errors.

A run's config is a stack of layers: the config files in the order given (the demo's
``config/config.yaml`` only when no file is given), then ``--config`` values. Each layer holds defaults
at top level and ``experiments: {name: overrides}``; an experiment is one more layer over the defaults.
Layers merge key by key (``deep_merge``) with one exception, the *backbone rule*: a layer that changes
``model.backbone`` starts from that backbone's own architecture, so the architecture-bound keys
(``ARCHITECTURE_KEYS``) it does not set itself fall back to the schema defaults instead of being
inherited from a layer that described another backbone. The result is filled with schema defaults and
validated against ``config/schema.yaml``; an error names the offending key path.

Never a silent fallback: a YAML file with a duplicated key, a number that is not finite, an experiment
name that would collide with a shared folder under ``results/``, both ``data.source`` and ``data.sources``
set, or neither of them, are errors naming the key (and, where known, the file that set it).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import yaml

from streetvision.errors import StreetvisionError


class ConfigError(StreetvisionError, ValueError):
    """A config problem; the message names the key."""


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first on line {seen[key] + 1}, again on line "
                                f"{key_node.start_mark.line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def section_settings(cls, section: dict):
    """A settings dataclass from one resolved config section: exactly the section's keys the class names
    (runners unpack config sections here, so no library function reaches into a config dict)."""
    import dataclasses

    return cls(**{field.name: section[field.name] for field in dataclasses.fields(cls)})


def load_schema(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


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
        loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path}: not UTF-8 text ({err})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path}: not valid YAML ({err})") from err
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: must be a mapping of config keys, "
                          f"got {type(loaded).__name__}")
    return loaded


def typed_cli_values(value):
    """Types for ``--config`` values: Snakemake parses nested ones with YAML's BaseLoader, which keeps every
    scalar a string (``scrc={alpha: 0.2}`` gives ``'0.2'``); numbers, booleans and null get their types
    back."""
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
    from streetvision.data.splits import SPLIT_NAMES

    ratios = data_cfg["splits"]
    total = sum(ratios[name] for name in SPLIT_NAMES)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ConfigError(f"config key '{prefix}data.splits': ratios must sum to 1, they sum to {total:.6g}")


def key_origins(named_layers: list[tuple[str, dict]]) -> dict[str, str]:
    """``{"data.source": "my.yaml", ...}``: the last layer (by name) that set each key, two levels deep."""
    origins = {}
    for name, layer in named_layers:
        for key, value in (layer or {}).items():
            origins[key] = name
            if isinstance(value, dict) and key != "experiments":
                origins.update({f"{key}.{sub}": name for sub in value})
    return origins


def _set_by(key: str, origins: dict[str, str], prefix: str, overrides: dict) -> str:
    """``'data.source' (set in my.yaml)``: a key with where it came from, for messages."""
    section, _, sub = key.partition(".")
    if sub in ((overrides or {}).get(section) or {}):
        return f"'{prefix}{key}'"
    return f"'{key}'" + (f" (set in {origins[key]})" if key in origins else "")


def check_data_source(data_cfg: dict, prefix: str, origins: dict[str, str], overrides: dict) -> None:
    """Exactly one of ``data.source`` and ``data.sources``: never two sets of data that one of them silently
    overrides, and never the demo generator as a fallback."""
    single, several = data_cfg.get("source"), data_cfg.get("sources")
    if single is not None and several:
        raise ConfigError(
            f"config keys {_set_by('data.source', origins, prefix, overrides)} and "
            f"{_set_by('data.sources', origins, prefix, overrides)} are both set: give one of them (a later "
            "config file that replaces an earlier file's list sets 'data.sources: null')")
    if single is None and not several:
        raise ConfigError(f"config key '{prefix}data.source' (or 'data.sources') is required: say where the "
                          "images "
                          "come from (e.g. source: natix_parquet with path: data/natix); nothing falls back "
                          "to the demo's synthetic scenes")


def check_finite_numbers(value, where: str) -> None:
    """YAML reads ``.inf`` and ``.nan`` as numbers, which no setting accepts."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite_numbers(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_finite_numbers(item, f"{where}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{where}': {value} is not a finite number")


def check_experiment_name(name: str) -> None:
    """An experiment's folder is ``results/<name>/``: it must not be one of the folders or files every
    experiment shares there (compared case-insensitively, for case-insensitive file systems)."""
    from streetvision.layout import SHARED_RESULTS_ENTRIES

    clash = next((entry for entry in SHARED_RESULTS_ENTRIES if entry.lower() == name.lower()), None)
    if clash:
        raise ConfigError(f"config key 'experiments.{name}': the name is taken by results/{clash}, which the "
                          "workflow "
                          "writes for every experiment; reserved names: "
                          f"{', '.join(sorted(SHARED_RESULTS_ENTRIES))}")


def resolve_experiments(config: dict, schema: dict, origins: dict[str, str] | None = None) -> dict[str, dict]:
    """Validate the whole config and return ``{experiment: resolved config}``.

    ``origins`` (``key_origins`` of the layers) lets errors name the file that set a key.
    """
    origins = origins or {}
    check_finite_numbers(config, "")
    filled = fill_defaults(config, schema)
    validate_section(filled, schema)
    defaults = {k: v for k, v in config.items() if k not in ("experiments", "run_experiments", "sweeps")}
    experiments = dict(filled["experiments"] or {})
    for name in experiments:
        check_experiment_name(name)
    points, prefixes = sweep_points(filled.get("sweeps") or {}, experiments)
    experiments.update({name: overrides for name, (overrides, _) in points.items()})
    selected = []
    for name in config.get("run_experiments") or list(experiments):  # a sweep's name: all of its points
        in_sweep = [point for point, (_, record) in points.items() if record["sweep"] == name]
        selected += in_sweep or [name]
    unknown = [name for name in selected if name not in experiments]
    if unknown:
        raise ConfigError(f"config key 'run_experiments': {unknown} not defined under 'experiments' "
                          f"({sorted(experiments)})")
    if not selected:
        raise ConfigError("config key 'experiments': at least one experiment is required")
    resolved = {}
    for name in selected:
        overrides = experiments[name]
        prefix = prefixes.get(name, f"experiments.{name}")
        if not isinstance(overrides, dict | type(None)):
            raise ConfigError(f"config key '{prefix}': must be a mapping of overrides, got {overrides!r}")
        overrides = dict(overrides or {})
        replicates = overrides.pop(REPLICATES, 1)
        merged = fill_defaults(overlay(defaults, overrides), schema)
        merged.pop("experiments", None)
        merged.pop("run_experiments", None)
        validate_section(merged, schema, prefix)
        check_split_ratios(merged["data"], prefix + ".")
        check_data_source(merged["data"], prefix + ".", origins, overrides)
        if name in points:
            merged["sweep"] = points[name][1]
        for replicate_name, replicate in replicate_experiments(name, merged, replicates):
            if replicate_name in resolved or (replicate_name != name and replicate_name in experiments):
                raise ConfigError(f"config key '{prefix}.{REPLICATES}': its replicate {replicate_name} is "
                                  "also an experiment of its own; rename one of them")
            check_experiment_name(replicate_name)
            resolved[replicate_name] = replicate
    return resolved


def sweep_points(sweeps: dict, experiments: dict) -> tuple[dict, dict]:
    """``sweeps`` -> ({point name: (overrides, record)}, {point name: config prefix for errors}).

    Each point is ``<sweep>-<k>``: the base experiment's overrides (or the defaults), the sweep's
    ``overrides``, then point k of the cartesian product of ``grid`` (keys and values in the order written;
    dotted keys such as ``train.lr``). ``record`` (``sweep``, ``point``, ``values``) goes to the resolved
    config for the report."""
    import itertools

    points, prefixes = {}, {}
    for sweep, spec in sweeps.items():
        base = spec.get("base")
        if base is not None and base not in experiments:
            raise ConfigError(f"config key 'sweeps.{sweep}.base': {base!r} is not an experiment "
                              f"({sorted(experiments)})")
        start = deep_merge(dict(experiments.get(base) or {}) if base else {}, spec.get("overrides") or {})
        keys = list(spec["grid"])
        for k, values in enumerate(itertools.product(*(spec["grid"][key] for key in keys))):
            name = f"{sweep}-{k}"
            if name in experiments or name in points:
                raise ConfigError(f"config key 'sweeps.{sweep}': its point {name} is also an experiment of "
                                  "its own; rename one of them")
            check_experiment_name(name)
            overrides = start
            for key, value in zip(keys, values, strict=True):
                overrides = deep_merge(overrides, _nested(key, value))
            record = {"sweep": sweep, "point": k, "values": dict(zip(keys, values, strict=True))}
            points[name] = (overrides, record)
            prefixes[name] = f"sweeps.{sweep} (point {k}: {name})"
    return points, prefixes


def _nested(dotted: str, value) -> dict:
    """``"train.lr", 0.1`` -> ``{"train": {"lr": 0.1}}``."""
    *parents, leaf = dotted.split(".")
    nested = {leaf: value}
    for parent in reversed(parents):
        nested = {parent: nested}
    return nested


REPLICATES = "replicates"  # an experiment's own key (not a config section): run it under N training seeds
REPLICATE_SEEDS = (("train", "seed"), ("explora", "seed"))  # what a replicate changes: +k each


def replicate_experiments(name: str, cfg: dict, replicates) -> list[tuple[str, dict]]:
    """``replicates: N`` -> experiments ``<name>-s<k>`` (k = 0..N-1), the same data and splits, training
    seeds + k; each records ``replicate: {of: name, k}`` for the report. N = 1: the experiment as it is."""
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise ConfigError(f"config key 'experiments.{name}.{REPLICATES}': must be an integer >= 1, got "
                          f"{replicates!r}")
    if replicates == 1:
        return [(name, cfg)]
    copies = []
    for k in range(replicates):
        replicate = copy.deepcopy(cfg)
        for section, key in REPLICATE_SEEDS:
            replicate[section][key] += k
        replicate["replicate"] = {"of": name, "k": k, "of_n": replicates}
        copies.append((f"{name}-s{k}", replicate))
    return copies
