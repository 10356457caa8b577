"""The bad-input suite: each case gets a clear error naming the file/key/split, or a counted quarantine.

Where the case's natural home is another module, its test lives there:

| case | test |
| --- | --- |
| corrupt JPEG (quarantined, counted) | test_ingest.py::test_image_folder_with_corrupt_duplicate_and_conflict |
| truncated parquet shard | test_ingest.py::test_truncated_parquet_shard_is_named |
| empty input folder | test_ingest.py::test_empty_input_folder_and_unknown_class_are_errors |
| labels other than 0/1 (index) | test_ingest.py::test_index_csv_source_and_bad_label; parquet: below |
| single-class data | test_ingest.py::test_single_class_split_is_an_error_naming_the_split; below |
| split too small for SCRC | test_calibration_phases.py::test_too_small_conformal_split_says_how_many_are_needed |
| NaN logits into phase 2 | test_calibration_phases.py::test_nan_logits_into_phase2_name_the_split |
| config typo | test_config.py::test_unknown_key_is_named; test_workflow.py (stops before any job) |
| missing pretrained_file | test_backbone.py::test_missing_pretrained_file_says_where_to_put_it |
| bundle with a flipped byte | test_bundle.py::test_flipped_byte_is_refused_naming_the_file |
| `../` path in a bundle | test_bundle.py::test_path_escapes_are_refused |
| pickle file | test_bundle.py::test_pickle_bearing_weights_are_never_unpickled; test_backbone.py (weights file) |
| `--configfile` not a mapping / missing | test_config.py::test_a_config_file_must_be_a_mapping |
| natix.yaml without its weights | test_real_config.py::test_natix_config_without_its_weights_fails_before_any_job |
| image not RGB-convertible / smaller than 2x2 | test_ingest.py::test_images_too_small_to_challenge_are_quarantined_and_counted |
| NATIX rows validators skip | test_ingest.py::test_natix_rows_are_skipped_exactly_as_validators_skip_them |
| non-integer mask_center | test_ingest.py::test_shards_without_descriptions_keep_every_row_and_mask_centres_reach_the_index |
| two sources with the same path | test_ingest.py::test_two_sources_reading_the_same_data_are_named |
| unknown distortion kind / level | test_challenge.py::test_apply_distortion_rejects_bad_input, test_level_and_level_probs_are_checked |
| unknown domain in train.domain_weights | below; test_domains.py::test_default_weights_are_the_validators_mix_else_uniform |
| single-class domain in val_test | test_domains.py / test_metrics.py::test_validator_metrics_of_a_single_class_domain_are_undefined_not_zero |
| backbone or head the stock miner cannot serve | below; test_hf_export.py::test_config_time_check_refuses_what_transformers_cannot_express |
| submitted_by not a hotkey (outside a demo) | below; test_hf_export.py::test_export_refuses_a_bundle_whose_hotkey_is_not_one |
| tampered Hugging Face repo file | below |
| SCRC reference scores NaN/out of range, alpha/delta outside (0, 1) | test_scrc.py::test_bad_reference_scores_name_the_argument, test_alpha_and_delta_outside_the_unit_interval_are_errors |
| gpu: 2 with one device; unwritable lock dir | test_devices.py::test_more_gpus_than_visible_is_an_error_before_training, test_an_unwritable_lock_directory_is_named |
| corrupt last.ckpt / hpc_ckpt | test_checkpoints.py::test_unreadable_checkpoints_are_skipped_with_a_warning_and_removed |
"""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import jpeg_bytes

from streetvision.config import ConfigError
from streetvision.data.natix import read_natix_parquet
from streetvision.data.sources import DataSourceError
from streetvision.data.splits import SplitError, check_splits_usable


def test_parquet_label_other_than_0_or_1_names_shard_and_row(tmp_path):
    pq.write_table(pa.table({"image": [jpeg_bytes(i) for i in range(3)], "label": [0, 1, 3]}),
                   tmp_path / "s.parquet")
    with pytest.raises(DataSourceError, match=r"s\.parquet row 2: label 3 is not 0 or 1"):
        list(read_natix_parquet(tmp_path))


def test_missing_label_names_shard_and_row(tmp_path):
    pq.write_table(pa.table({"image": [jpeg_bytes(0)], "label": pa.array([None], pa.int64())}),
                   tmp_path / "s.parquet")
    with pytest.raises(DataSourceError, match=r"s\.parquet row 0: label is missing"):
        list(read_natix_parquet(tmp_path))


def test_single_class_data_names_every_split():
    stats = {name: {"n": 10, "positives": 10, "negatives": 0}
             for name in ("train", "val_select", "val_calib", "val_conformal", "val_test")}
    with pytest.raises(SplitError,
                       match=r"split 'train' is single-class \(10 positives, 0 negatives\).*split 'val_test'"):
        check_splits_usable(stats)


def test_config_typo_in_a_nested_key_is_named(repo):
    from helpers import resolved_config

    with pytest.raises(ConfigError, match=r"unknown config key 'train\.max_epoch'"):
        resolved_config(repo, {"train": {"max_epoch": 3}})


def plan_for(repo, overrides):
    """describe_experiment on the tiny config: the config-time checks a Snakemake run makes before any job."""
    from helpers import resolved_config

    from streetvision.plan import describe_experiment

    cfg = resolved_config(repo, overrides)
    return describe_experiment("demo", cfg, demo=cfg["demo"])


def test_an_unknown_training_domain_is_named_before_any_job(repo):
    with pytest.raises(ConfigError, match=r"'experiments\.demo\.train\.domain_weights': unknown domain\(s\) "
                                          r"\['sdxl'\]; the configured sources have \['real'\]"):
        plan_for(repo, {"train": {"domain_weights": {"sdxl": 1.0}}})


def test_level_probabilities_must_sum_to_one(repo):
    with pytest.raises(ConfigError, match=r"train\.level_probs': \[0\.5, 0\.5, 0\.5, 0\.0\] must sum to 1"):
        plan_for(repo, {"train": {"level_probs": [0.5, 0.5, 0.5, 0.0]}})


def test_a_model_the_stock_miner_cannot_serve_is_refused_before_any_job(repo):
    with pytest.raises(ConfigError,
                       match=r"experiment demo: .*model\.backbone.*class_token: true.*hf_export\.enabled: "
                             r"false"):
        plan_for(repo, {"model": {"head": "pooled", "backbone_kwargs": {"class_token": False,
                                                                        "global_pool": "max"}}})
    assert plan_for(repo, {"model": {"head": "pooled", "backbone_kwargs": {"class_token": False,
                                                                           "global_pool": "max"}},
                           "hf_export": {"enabled": False}})  # no export asked for: fine


def test_an_scrc_size_of_another_method_is_refused_naming_the_right_key(repo):
    with pytest.raises(ConfigError,
                       match=r"'experiments\.demo\.scrc\.grid_size' does not apply to scrc\.method "
                                          r"split_fixed_sequence: its candidates are sized by "
                                          r"scrc\.sequence_size"):
        plan_for(repo, {"scrc": {"grid_size": 20}, "bundle": {"policy": "scrc"}})
    assert plan_for(repo, {"scrc": {"grid_size": 20, "method": "bonferroni"}, "bundle": {"policy": "scrc"}})
    assert plan_for(repo, {"scrc": {"grid_size": 20}})  # a threshold bundle runs no SCRC: nothing to check


def test_submitted_by_must_be_a_hotkey_outside_demo_runs(repo):
    with pytest.raises(ConfigError,
                       match=r"'experiments\.demo\.bundle\.model_card\.submitted_by': 'anonymous' is not "
                                          r"a hotkey"):
        plan_for(repo, {"demo": False})
    with pytest.raises(ConfigError,
                       match=r"submitted_by': 'anonymous' is not a hotkey"):  # the bundle's card needs it
        plan_for(repo, {"demo": False, "hf_export": {"enabled": False}})
    alice = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
    lines = plan_for(repo, {"demo": False, "bundle": {"model_card": {"submitted_by": alice}}})
    assert "RANDOM weights" in lines[-1]  # and outside a demo, random init is warned about


@pytest.mark.slow
def test_a_tampered_hugging_face_repo_file_is_named_by_verify(tiny_run, tmp_path):
    import shutil

    from helpers import run_cli

    results = tmp_path / "results"
    shutil.copytree(tiny_run["hf_export"].parent.parent, results)
    config = results / "t" / "hf_export" / "repo" / "config.json"
    config.write_text(config.read_text().replace('"Roadwork"',
                                                 '"RoadworK"'))  # same size: only the hash can tell
    done = run_cli("streetvision", "verify", str(results / "t" / "hf_export"))
    assert done.returncode == 1 and "repo/config.json" in done.stdout and "SHA-256 differs" in done.stdout
