import json

import pytest
from helpers import run_cli

from streetvision.io.manifest import (
    JOURNAL_NAME,
    ForeignFilesError,
    ManifestError,
    PhaseRecorder,
    lineage,
    read_manifest,
    verify_tree,
)


def make_phase(root, name="data", consumed=()):
    rec = PhaseRecorder(root / name, name, "exp", {"k": 1}, consumes=consumed, seed=7)
    rec.write_text("a.txt", "alpha")
    rec.write_bytes("sub/b.bin", b"\x00\x01\x02")
    rec.metrics["score"] = 0.5
    return rec.finish()


def test_manifest_contents(tmp_path):
    manifest = read_manifest(make_phase(tmp_path))
    assert manifest["phase"] == "data" and manifest["seed"] == 7
    assert {a["path"] for a in manifest["artifacts"]} == {"a.txt", "sub/b.bin"}
    assert all(len(a["sha256"]) == 64 and a["bytes"] > 0 for a in manifest["artifacts"])
    for key in ("config_hash", "git", "versions", "device", "started_at", "finished_at", "duration_s",
                "metrics"):
        assert key in manifest
    assert manifest["versions"]["python"]


def test_verify_catches_flipped_byte_and_missing_file(tmp_path):
    make_phase(tmp_path)
    assert verify_tree(tmp_path) == (1, [])
    artifact = tmp_path / "data" / "sub" / "b.bin"
    artifact.write_bytes(b"\x00\x01\x03")  # same size, one byte flipped
    _, problems = verify_tree(tmp_path)
    assert len(problems) == 1 and "b.bin" in problems[0] and "SHA-256" in problems[0]
    (tmp_path / "data" / "a.txt").unlink()
    _, problems = verify_tree(tmp_path)
    assert any("a.txt" in p and "missing" in p for p in problems)


def test_verify_catches_changed_consumed_manifest(tmp_path):
    upstream = make_phase(tmp_path, "data")
    make_phase(tmp_path, "phase1", consumed=[upstream])
    assert verify_tree(tmp_path)[1] == []
    data = json.loads(upstream.read_text())
    data["metrics"]["score"] = 0.9
    upstream.write_text(json.dumps(data))
    problems = verify_tree(tmp_path)[1]
    assert any("consumed manifest changed" in p for p in problems)
    assert [n["manifest"]["phase"] for n in lineage(tmp_path / "phase1" / "manifest.json")] == ["phase1", "data"]


def test_rerun_removes_the_previous_run_but_not_scratch(tmp_path):
    make_phase(tmp_path)
    (tmp_path / "data" / "checkpoints").mkdir()
    (tmp_path / "data" / "checkpoints" / "last.ckpt").write_text("resume me")
    PhaseRecorder(tmp_path / "data", "data", "exp", {}, scratch=["checkpoints"])
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [JOURNAL_NAME, "checkpoints"]
    assert (tmp_path / "data" / "checkpoints" / "last.ckpt").read_text() == "resume me"


def test_a_recorder_never_removes_files_its_step_did_not_write(tmp_path):
    """The folder of a step holding someone else's files (a user's notes, or another experiment's outputs under
    a colliding name) stops the step before anything is removed."""
    make_phase(tmp_path)
    (tmp_path / "data" / "notes.txt").write_text("mine")
    (tmp_path / "data" / "phase1_baseline").mkdir()
    (tmp_path / "data" / "phase1_baseline" / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(ForeignFilesError,
                       match=r"holds 2 file\(s\) that step 'data' did not write \(notes\.txt, "
                                                r"phase1_baseline/model\.safetensors\); nothing was removed"):
        PhaseRecorder(tmp_path / "data", "data", "exp", {})
    assert (tmp_path / "data" / "a.txt").read_text() == "alpha" and (tmp_path / "data" / "manifest.json").is_file()
    assert (tmp_path / "data" / "phase1_baseline" / "model.safetensors").read_bytes() == b"weights"
    # A manifest of another phase owns nothing in this one either.
    with pytest.raises(ForeignFilesError, match="step 'report' did not write"):
        PhaseRecorder(tmp_path / "data", "report", "exp", {})


def test_a_killed_run_is_cleaned_up_through_its_journal(tmp_path):
    rec = PhaseRecorder(tmp_path / "p", "p", "exp", {})
    rec.write_json("first.json", {})
    (rec.folder("bundle") / "weights.bin").write_bytes(b"w")  # a library function fills a claimed folder
    assert sorted(json.loads((tmp_path / "p" / JOURNAL_NAME).read_text())["claimed"]) == ["bundle/", "first.json"]
    # killed here: no manifest. The next run removes what the journal claims, and only that.
    again = PhaseRecorder(tmp_path / "p", "p", "exp", {})
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [JOURNAL_NAME]
    again.write_json("second.json", {})
    again.finish()
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [JOURNAL_NAME, "manifest.json",
                                                                  "second.json"]
    # Snakemake deletes a job's manifest before it re-runs the job: the journal still says what is ours.
    (tmp_path / "p" / "manifest.json").unlink()
    PhaseRecorder(tmp_path / "p", "p", "exp", {})
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [JOURNAL_NAME]


def test_every_writer_lists_what_it_writes(tmp_path):
    import pandas as pd
    import torch

    from streetvision.figures import new_figure

    rec = PhaseRecorder(tmp_path / "p", "p", "exp", {})
    rec.write_json("r.json", {"x": 1})
    rec.write_parquet("t/a.parquet", pd.DataFrame({"a": [1, 2]}))
    rec.write_csv("c.csv", pd.DataFrame({"a": [1]}))
    rec.write_tensors("w.safetensors", {"w": torch.zeros(2)})
    rec.write_figure("f.png", new_figure()[0])
    rec.write_with("raw.bin", lambda tmp: tmp.write_bytes(b"raw"))
    manifest = read_manifest(rec.finish())
    assert {a["path"] for a in manifest["artifacts"]} == {"r.json", "t/a.parquet", "c.csv", "w.safetensors",
                                                          "f.png", "raw.bin"}
    assert verify_tree(tmp_path) == (1, [])


def test_a_file_written_without_being_listed_stops_the_manifest(tmp_path):
    rec = PhaseRecorder(tmp_path / "p", "p", "exp", {}, scratch=["checkpoints"])
    rec.write_json("listed.json", {})
    (tmp_path / "p" / "stray.txt").write_text("nobody listed me")
    (tmp_path / "p" / "checkpoints").mkdir()
    (tmp_path / "p" / "checkpoints" / "last.ckpt").write_text("scratch is fine")
    with pytest.raises(RuntimeError,
                       match=r"files written without being listed in the manifest: \['stray.txt'\]"):
        rec.finish()
    assert not (tmp_path / "p" / "manifest.json").exists()


def test_a_missing_input_manifest_is_named(tmp_path):
    with pytest.raises(ManifestError, match=r"input manifest .*nope/manifest.json is missing"):
        PhaseRecorder(tmp_path / "p", "p", "exp", {}, consumes=[tmp_path / "nope" / "manifest.json"])


def test_cli_verify_and_inspect(tmp_path):
    upstream = make_phase(tmp_path, "data")
    make_phase(tmp_path, "phase1", consumed=[upstream])
    ok = run_cli("streetvision", "verify", str(tmp_path))
    assert ok.returncode == 0 and "OK: 2 manifest(s)" in ok.stdout
    shown = run_cli("streetvision", "inspect", str(tmp_path / "phase1" / "manifest.json"))
    assert shown.returncode == 0 and "phase1 [exp]" in shown.stdout and "  data [exp]" in shown.stdout
    (tmp_path / "data" / "a.txt").write_text("alphb")
    bad = run_cli("streetvision", "verify", str(tmp_path))
    assert bad.returncode == 1 and "MISMATCH" in bad.stdout and "a.txt" in bad.stdout
    empty = run_cli("streetvision", "verify", str(tmp_path / "data" / "sub"))
    assert empty.returncode == 2 and "no manifest" in empty.stderr
