"""train.compile: torch.compile where the platform can compile, a warning and an uncompiled run where not."""

import json
import logging

import pytest
import torch

from streetvision.train.trainer import compile_if_possible, compile_problem


def no_compiler(name):
    return None


def test_cpu_without_a_cpp_compiler_warns_and_leaves_the_model_uncompiled(monkeypatch, caplog):
    monkeypatch.delenv("CXX", raising=False)
    model = torch.nn.Linear(2, 1)
    with caplog.at_level(logging.WARNING):
        assert compile_if_possible(model, True, "cpu", which=no_compiler) is False
    assert "train.compile is on but no C++ compiler" in caplog.text and "training uncompiled" in caplog.text
    assert not hasattr(model, "_compiled_call_impl") or model._compiled_call_impl is None


def test_cxx_in_the_environment_counts_as_a_compiler(monkeypatch):
    monkeypatch.setenv("CXX", "/opt/bin/g++-13")
    assert compile_problem("cpu", which=no_compiler) is None


def test_gpu_without_triton_names_triton(monkeypatch):
    import torch.utils._triton as triton

    monkeypatch.setattr(triton, "has_triton", lambda: False)
    assert "Triton" in compile_problem("gpu")


def test_off_compiles_nothing(caplog):
    model = torch.nn.Linear(2, 1)
    assert compile_if_possible(model, False, "cpu", which=no_compiler) is False
    assert caplog.text == ""


@pytest.mark.slow
def test_phase1_trains_compiled_and_exports_the_usual_weights(repo, tmp_path):
    """Through run_baseline on this CPU (g++ is here): dynamo captured graphs, and the export has the plain
    state-dict keys of an uncompiled model."""
    from helpers import ingest_and_index, resolved_config
    from safetensors.torch import load_file

    from streetvision.layout import Baseline
    from streetvision.phases.baseline import run_baseline

    cfg = resolved_config(repo, {"train": {"max_epochs": 1, "compile": True}})
    data = tmp_path / "data"
    ingest_and_index(cfg={"data": cfg["data"]}, out_dir=data, experiment="demo")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    manifest = run_baseline(cfg={k: cfg[k] for k in ("model", "train", "challenge")}, data_dir=data,
                            out_dir=tmp_path / "p1", experiment="demo")
    assert json.loads(manifest.read_text())["metrics"]["compiled"] is True
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    assert not any("_orig_mod" in name for name in load_file(tmp_path / "p1" / Baseline.MODEL))
