import json

from helpers import run_cli

from streetvision.io.manifest import PhaseRecorder, lineage, read_manifest, verify_tree


def make_phase(root, name="data", consumed=()):
    rec = PhaseRecorder(root / name, name, "exp", {"k": 1}, seed=7)
    (root / name / "a.txt").write_text("alpha")
    (root / name / "sub").mkdir(exist_ok=True)
    (root / name / "sub" / "b.bin").write_bytes(b"\x00\x01\x02")
    rec.add_artifact("a.txt")
    rec.add_artifact("sub/b.bin")
    for path in consumed:
        rec.consume(path)
    rec.metrics["score"] = 0.5
    return rec.finish()


def test_manifest_contents(tmp_path):
    manifest = read_manifest(make_phase(tmp_path))
    assert manifest["phase"] == "data" and manifest["seed"] == 7
    assert {a["path"] for a in manifest["artifacts"]} == {"a.txt", "sub/b.bin"}
    assert all(len(a["sha256"]) == 64 and a["bytes"] > 0 for a in manifest["artifacts"])
    for key in ("config_hash", "git", "versions", "device", "started_at", "finished_at", "duration_s", "metrics"):
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


def test_rerun_removes_stale_manifest_first(tmp_path):
    make_phase(tmp_path)
    PhaseRecorder(tmp_path / "data", "data", "exp", {})
    assert not (tmp_path / "data" / "manifest.json").exists()


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
