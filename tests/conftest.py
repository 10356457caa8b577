import pytest
from helpers import REPO, resolved_config, run_tiny_steps


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skipped on machines without it (CI has none)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # not `"gpu" in item.keywords`: folder names count there
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo():
    return REPO


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny pipeline, run once per test session through the real runners, with both bundle policies:
    ``{step: folder}`` of experiment ``t`` (threshold policy, Hugging Face export) plus ``"bundle_scrc"``, the
    scrc-policy bundle built from the same upstream steps. Tests must not modify these folders (copy them)."""
    from streetvision import layout
    from streetvision.phases.bundle import run_bundle

    results = tmp_path_factory.mktemp("tiny") / "results"
    cfg = resolved_config(REPO, {"bundle": {"robustness_levels": [0, 3]}})
    dirs = run_tiny_steps(results, cfg)
    dirs["bundle_scrc"] = layout.step_dir(results, "t_scrc", "bundle")
    run_bundle(cfg={"bundle": {**cfg["bundle"], "policy": "scrc"}, "challenge": cfg["challenge"],
                    "demo": cfg["demo"]},
               data_dir=dirs["data"], baseline_dir=dirs["baseline"],
               thresholds_dir=dirs["thresholds"], gate_dir=dirs["gate"], scrc_dir=dirs["scrc"],
               out_dir=dirs["bundle_scrc"], experiment="t_scrc")
    return dirs
