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
"""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import jpeg_bytes

from streetvision.config import ConfigError
from streetvision.data.sources import DataSourceError, read_natix_parquet
from streetvision.data.splits import SplitError, check_splits_usable


def test_parquet_label_other_than_0_or_1_names_shard_and_row(tmp_path):
    pq.write_table(pa.table({"image": [jpeg_bytes(i) for i in range(3)], "label": [0, 1, 3]}), tmp_path / "s.parquet")
    with pytest.raises(DataSourceError, match=r"s\.parquet row 2: label 3 is not 0 or 1"):
        list(read_natix_parquet(tmp_path))


def test_missing_label_names_shard_and_row(tmp_path):
    pq.write_table(pa.table({"image": [jpeg_bytes(0)], "label": pa.array([None], pa.int64())}), tmp_path / "s.parquet")
    with pytest.raises(DataSourceError, match=r"s\.parquet row 0: label is missing"):
        list(read_natix_parquet(tmp_path))


def test_single_class_data_names_every_split():
    stats = {name: {"n": 10, "positives": 10, "negatives": 0}
             for name in ("train", "val_select", "val_calib", "val_conformal", "val_test")}
    with pytest.raises(SplitError, match=r"split 'train' is single-class \(10 positives, 0 negatives\).*split 'val_test'"):
        check_splits_usable(stats)


def test_config_typo_in_a_nested_key_is_named(repo):
    from helpers import resolved_config

    with pytest.raises(ConfigError, match=r"unknown config key 'train\.max_epoch'"):
        resolved_config(repo, {"train": {"max_epoch": 3}})
