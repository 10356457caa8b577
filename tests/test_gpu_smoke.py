"""benchmarks/gpu_smoke.py: end to end on CPU (tiny, ``--cpu-check``), and the real run where a GPU exists."""

import re
import sys

import pytest
from helpers import REPO, run_cli

pytestmark = pytest.mark.slow


def run_smoke(tmp_path, *args):
    done = run_cli(sys.executable, str(REPO / "benchmarks/gpu_smoke.py"), "--workdir", str(tmp_path), *args,
                   timeout=3000)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def table_rows(output):
    return {m.group(1): m.group(2).split() for m in re.finditer(r"^(\w+/\w+)\s+(.*)$", output, re.MULTILINE)}


def test_the_smoke_script_runs_end_to_end_on_cpu(tmp_path):
    output = run_smoke(tmp_path, "--cpu-check", "--cores", "2")
    rows = table_rows(output)
    for experiment, phases in (("smoke", ("ingest", "data", "explora", "baseline", "thresholds", "gate", "scrc",
                                          "bundle")),
                               ("pair_a", ("data", "baseline", "bundle")), ("pair_b", ("data", "baseline", "bundle"))):
        for phase in phases:
            assert float(rows[f"{experiment}/{phase}"][0]) > 0, output
    assert float(rows["smoke/baseline"][1].replace(",", "")) > 0  # training images/s
    assert rows["smoke/baseline"][3] == "-"  # no MFU without a GPU
    assert re.fullmatch(r"\d+%:[\d.]+/[\d.]+ms", rows["smoke/baseline"][4]), output  # how loader-bound
    assert re.search(r"baseline: [\d.e+-]+ GFLOP per training image", output)
    assert "phase 1 jobs took the GPU in turn" in output
    assert re.search(r"stage 3: one synthesize shard, tiny random pipeline", output)
    assert re.search(r"  8 images in [\d.]+ s: [\d.]+ images/s", output)


@pytest.mark.gpu
def test_the_smoke_run_on_a_gpu_reports_throughput_memory_and_mfu(tmp_path):
    output = run_smoke(tmp_path, "--images", "2000")
    rows = table_rows(output)
    for phase in ("smoke/baseline", "smoke/explora"):
        wall, images_per_s, memory, unit, mfu = rows[phase]
        assert float(images_per_s.replace(",", "")) > 0 and unit == "GiB" and float(memory) > 0
        assert 0 < float(mfu.rstrip("%")) < 100, output
    assert "phase 1 jobs took the GPU in turn" in output
    log = (tmp_path / "pair/results/pair_a/logs/phase1_baseline.log").read_text()
    assert "locked GPU(s) 0" in log and "training on CPU" not in log
