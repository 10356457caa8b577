import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from streetvision.io.atomic import TEMP_SUFFIX, atomic_write_bytes, atomic_write_json, atomic_write_with

OLD = b"A" * (4 << 20)
NEW = b"B" * (4 << 20)

WRITER = textwrap.dedent(
    """
    import sys
    from streetvision.io.atomic import atomic_write_bytes
    target = sys.argv[1]
    payloads = [b"A" * (4 << 20), b"B" * (4 << 20)]
    print("ready", flush=True)
    i = 1
    while True:  # rewrite forever, alternating contents, until killed
        atomic_write_bytes(target, payloads[i % 2])
        i += 1
    """
)


def test_roundtrip_and_no_litter(tmp_path):
    target = tmp_path / "sub" / "x.bin"
    atomic_write_bytes(target, b"hello")
    atomic_write_bytes(target, b"world")
    assert target.read_bytes() == b"world"
    assert [p.name for p in target.parent.iterdir()] == ["x.bin"]


def test_failed_writer_leaves_old_file(tmp_path):
    target = tmp_path / "t.parquet"
    atomic_write_bytes(target, b"old")

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write_with(target, broken)
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_json_rejects_nan_as_null(tmp_path):
    target = atomic_write_json(tmp_path / "m.json", {"a": float("nan"), "b": np.float32(1.5)})
    assert target.read_text().replace(" ", "").count('"a":null') == 1


def test_sigkill_mid_write_never_tears(tmp_path):
    """SIGKILL a writer at 24 seeded random moments: the target is always wholly old or wholly new."""
    target = tmp_path / "blob.bin"
    kills_mid_write = 0
    for seed in range(24):
        atomic_write_bytes(target, OLD)
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(np.random.default_rng(seed).uniform(0.0, 0.12))  # several 4 MB writes
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        content = target.read_bytes()
        assert content in (OLD, NEW), f"seed {seed}: torn file of {len(content)} bytes"
        kills_mid_write += any(p.name.endswith(TEMP_SUFFIX) for p in tmp_path.iterdir())
        # The next write cleans up whatever temp file the killed writer left behind.
        atomic_write_bytes(target, b"final")
        assert target.read_bytes() == b"final"
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(TEMP_SUFFIX)]
    assert kills_mid_write > 0, "no kill landed mid-write: the test did not exercise the torn-write case"


def test_concurrent_writers_of_one_target_do_not_break_each_other(tmp_path):
    """Two processes writing the same file (e.g. two experiments sharing the demo scenes) both succeed."""
    code = textwrap.dedent(
        """
        import sys
        from streetvision.io.atomic import atomic_write_bytes
        for i in range(300):
            atomic_write_bytes(sys.argv[1], b"same content" * 1000, durable=False)
        """
    )
    writers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "shared.jpg")],
                                stderr=subprocess.PIPE)
               for _ in range(3)]
    for proc in writers:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    assert (tmp_path / "shared.jpg").read_bytes() == b"same content" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["shared.jpg"]
