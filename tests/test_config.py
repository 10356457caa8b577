import pytest
import yaml

from streetvision.config import (
    ConfigError,
    load_config_file,
    load_schema,
    merge_layers,
    resolve_experiments,
    typed_cli_values,
)


@pytest.fixture
def schema(repo):
    return load_schema(repo / "config" / "schema.yaml")


@pytest.fixture
def demo(repo):
    return yaml.safe_load((repo / "config" / "config.yaml").read_text())


def test_shipped_configs_are_valid(repo, schema, demo):
    assert list(resolve_experiments(demo, schema)) == ["demo", "demo_explora"]
    natix = yaml.safe_load((repo / "config" / "natix.yaml").read_text())
    resolved = resolve_experiments(natix, schema)["dinov2"]
    assert resolved["data"]["source"] == "natix_parquet"
    assert resolved["train"]["level_probs"] == [0.25, 0.25, 0.25, 0.25]  # filled from schema defaults


def test_a_config_without_experiments_runs_one_named_main(schema, demo):
    del demo["experiments"]
    assert list(resolve_experiments(demo, schema)) == ["main"]


def test_unknown_key_is_named(schema, demo):
    demo["data"]["splitz"] = {}
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.splitz'"):
        resolve_experiments(demo, schema)


def test_unknown_key_inside_an_experiment_is_named(schema, demo):
    demo["experiments"]["demo"] = {"model": {"backbon": "vit"}}
    with pytest.raises(ConfigError, match=r"'experiments\.demo\.model\.backbon'"):
        resolve_experiments(demo, schema)


def test_wrong_type_is_named(schema, demo):
    demo["data"]["synthetic"]["count"] = "many"
    with pytest.raises(ConfigError,
                       match=r"config key 'data\.synthetic\.count': 'many' is not of type 'integer'"):
        resolve_experiments(demo, schema)


def test_ratios_must_sum_to_one(schema, demo):
    demo["data"]["splits"]["train"] = 0.7
    with pytest.raises(ConfigError,
                       match=r"'experiments\.demo\.data\.splits': ratios must sum to 1, they sum to 1\.1"):
        resolve_experiments(demo, schema)


def test_bad_enum_is_named(schema, demo):
    demo["data"]["source"] = "s3"
    with pytest.raises(ConfigError, match=r"config key 'data\.source'"):
        resolve_experiments(demo, schema)


def test_experiments_override_defaults_side_by_side(schema, demo):
    demo["experiments"] = {"a": {}, "b": {"data": {"seed": 5}, "explora": {"enabled": True}}}
    resolved = resolve_experiments(demo, schema)
    assert resolved["a"]["data"]["seed"] == 0 and resolved["b"]["data"]["seed"] == 5
    assert resolved["b"]["data"]["synthetic"]["count"] == demo["data"]["synthetic"]["count"]
    assert resolved["b"]["explora"]["enabled"] and not resolved["a"]["explora"]["enabled"]
    demo["run_experiments"] = ["b"]
    assert list(resolve_experiments(demo, schema)) == ["b"]
    demo["run_experiments"] = ["c"]
    with pytest.raises(ConfigError, match="run_experiments"):
        resolve_experiments(demo, schema)


def test_a_layer_that_switches_the_backbone_drops_the_old_architecture(schema, demo):
    """The demo's tiny-ViT kwargs and input size must not leak into an experiment that asks for DINOv2."""
    demo["model"]["img_size"] = 64
    demo["experiments"]["dinov2"] = {"model": {"backbone": "vit_small_patch14_dinov2.lvd142m"}}
    demo["experiments"]["wide"] = {"model": {"backbone_kwargs": {"embed_dim": 96}}}  # same backbone: merged
    resolved = resolve_experiments(demo, schema)
    assert resolved["dinov2"]["model"]["backbone_kwargs"] == {} and resolved["dinov2"]["model"]["img_size"] == 224
    assert resolved["dinov2"]["model"]["init"] == "random"  # not architecture: inherited
    assert resolved["wide"]["model"]["backbone_kwargs"]["embed_dim"] == 96
    assert resolved["wide"]["model"]["backbone_kwargs"]["depth"] == 3 and resolved["wide"]["model"]["img_size"] == 64


def test_config_layers_stack_in_order_with_the_backbone_rule():
    base = {"model": {"backbone": "tiny", "backbone_kwargs": {"depth": 3}, "img_size": 64},
            "train": {"lr": 1.0}}
    same = {"train": {"lr": 2.0}, "model": {"backbone": "tiny"}}
    other = {"model": {"backbone": "big", "img_size": 518}}
    assert merge_layers([base, same]) == {"model": {"backbone": "tiny", "backbone_kwargs": {"depth": 3},
                                                    "img_size": 64},
                                          "train": {"lr": 2.0}}
    assert merge_layers([base, other]) == {"model": {"backbone": "big", "img_size": 518},
                                           "train": {"lr": 1.0}}


def test_a_config_file_must_be_a_mapping(tmp_path):
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: must be a mapping of config keys, got list"):
        load_config_file(listing)
    with pytest.raises(ConfigError, match=r"missing\.yaml does not exist"):
        load_config_file(tmp_path / "missing.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_config_file(tmp_path / "empty.yaml") == {}


def test_command_line_values_get_their_types_back():
    # Snakemake hands nested --config values over as strings (YAML BaseLoader).
    assert typed_cli_values({"scrc": {"alpha": "0.25", "grid_size": "50"}, "demo": "true", "x": "null",
                             "run_experiments": ["a"], "name": "dinov2", "lr": "1e-4"}) == {
        "scrc": {"alpha": 0.25, "grid_size": 50}, "demo": True, "x": None, "run_experiments": ["a"],
        "name": "dinov2", "lr": 1e-4}


def test_replicates_become_one_experiment_per_training_seed(schema, demo):
    demo["experiments"] = {"demo": {"replicates": 3, "train": {"seed": 5}}, "other": {}}
    resolved = resolve_experiments(demo, schema)
    assert list(resolved) == ["demo-s0", "demo-s1", "demo-s2", "other"]
    assert [resolved[f"demo-s{k}"]["train"]["seed"] for k in range(3)] == [5, 6, 7]
    assert [resolved[f"demo-s{k}"]["explora"]["seed"] for k in range(3)] == [0, 1, 2]
    assert all(resolved[f"demo-s{k}"]["data"] == resolved["other"]["data"] for k in range(3))  # same splits
    assert resolved["demo-s2"]["replicate"] == {"of": "demo", "k": 2, "of_n": 3} and "replicate" not in resolved["other"]
    for bad in (0, "two", True, 1.5):
        demo["experiments"] = {"demo": {"replicates": bad}}
        with pytest.raises(ConfigError, match="experiments.demo.replicates': must be an integer >= 1"):
            resolve_experiments(demo, schema)
    demo["experiments"] = {"demo": {"replicates": 2}, "demo-s1": {}}
    with pytest.raises(ConfigError, match="replicate demo-s1 is also an experiment of its own"):
        resolve_experiments(demo, schema)


def test_a_sweep_expands_into_one_experiment_per_grid_point(schema, demo):
    demo["sweeps"] = {"lr": {"base": "demo_explora", "overrides": {"train": {"max_epochs": 3}},
                             "grid": {"train.lr": [0.001, 0.01], "model.head": ["token", "pooled"]}}}
    resolved = resolve_experiments(demo, schema)
    assert list(resolved) == ["demo", "demo_explora", "lr-0", "lr-1", "lr-2", "lr-3"]
    points = [(resolved[f"lr-{k}"]["train"]["lr"], resolved[f"lr-{k}"]["model"]["head"]) for k in range(4)]
    assert points == [(0.001, "token"), (0.001, "pooled"), (0.01, "token"), (0.01, "pooled")]
    assert all(resolved[f"lr-{k}"]["explora"]["enabled"] and resolved[f"lr-{k}"]["train"]["max_epochs"] == 3
               for k in range(4))  # the base experiment's overrides, then the sweep's
    assert resolved["lr-2"]["sweep"] == {"sweep": "lr", "point": 2,
                                         "values": {"train.lr": 0.01, "model.head": "token"}}
    demo["run_experiments"] = ["lr"]
    assert list(resolve_experiments(demo, schema)) == ["lr-0", "lr-1", "lr-2", "lr-3"]
    demo["run_experiments"] = None
    demo["sweeps"] = {"lr": {"base": "nobody", "grid": {"train.lr": [1]}}}
    with pytest.raises(ConfigError, match="sweeps.lr.base': 'nobody' is not an experiment"):
        resolve_experiments(demo, schema)
    demo["sweeps"] = {"lr": {"grid": {"train.learning_rate": [1]}}}
    with pytest.raises(ConfigError, match="unknown config key 'sweeps.lr \\(point 0: lr-0\\).train.learning_rate'"):
        resolve_experiments(demo, schema)
    demo["sweeps"] = {"demo": {"grid": {"train.lr": [1]}}, "x": {"grid": {}}}
    with pytest.raises(ConfigError, match="sweeps.x.grid"):
        resolve_experiments(demo, schema)
