import json
import subprocess
import sys
import textwrap

import pytest

from streetvision.train.devices import acquire_gpus

HOLDER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from streetvision.train.devices import acquire_gpus
    lease = acquire_gpus(1, total=2, lock_dir=Path(sys.argv[1]), timeout_s=float(sys.argv[2]), poll_s=0.05)
    print(json.dumps({"devices": lease.devices, "env": os.environ["CUDA_VISIBLE_DEVICES"]}), flush=True)
    time.sleep(float(sys.argv[3]))
    """
)


def holder(lock_dir, timeout=30.0, hold=3.0):
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_dir), str(timeout), str(hold)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={"PATH": "/usr/bin:/bin"})


def test_concurrent_jobs_get_distinct_devices(tmp_path):
    first, second = holder(tmp_path), holder(tmp_path)
    got = [json.loads(p.stdout.readline()) for p in (first, second)]
    assert sorted(g["devices"][0] for g in got) == [0, 1]
    assert {g["env"] for g in got} == {"0", "1"}
    third = holder(tmp_path, timeout=0.5, hold=0)  # both devices busy: waits, then gives up
    _, err = third.communicate(timeout=60)
    assert third.returncode != 0 and "no 1 free GPU(s) among 2" in err
    for p in (first, second):
        p.wait(timeout=60)
    fourth = holder(tmp_path, hold=0)  # locks die with their processes
    assert json.loads(fourth.stdout.readline())["devices"] == [0]
    fourth.wait(timeout=60)


def test_scheduler_assignment_is_respected(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "3"}
    lease = acquire_gpus(1, total=8, lock_dir=tmp_path, environ=env)
    assert lease.preassigned and lease.devices == [3] and env["CUDA_VISIBLE_DEVICES"] == "3"
    assert list(tmp_path.iterdir()) == []


def test_asking_for_more_gpus_than_exist_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="needs 3 GPU"):
        acquire_gpus(3, total=2, lock_dir=tmp_path, environ={})
