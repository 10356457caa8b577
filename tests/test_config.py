import pytest
import yaml

from streetvision.config import ConfigError, load_schema, resolve_experiments


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
    assert resolved["data"]["natix"]["check_scene_description"] is True  # filled from schema defaults


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
    with pytest.raises(ConfigError, match=r"config key 'data\.synthetic\.count': 'many' is not of type 'integer'"):
        resolve_experiments(demo, schema)


def test_ratios_must_sum_to_one(schema, demo):
    demo["data"]["splits"]["train"] = 0.7
    with pytest.raises(ConfigError, match=r"'experiments\.demo\.data\.splits': ratios must sum to 1, they sum to 1\.1"):
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
