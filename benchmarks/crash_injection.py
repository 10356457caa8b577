"""Crash injection: SIGKILL the whole Snakemake process tree at random moments, recover, and count damage.

For each seeded trial: start the pipeline in a fresh directory, kill its process group after a random
delay drawn over the clean run's duration (so kills land in every phase), then `snakemake --unlock`
and `snakemake --rerun-incomplete` to completion, and check every file under results/:
- torn files: a JSON, parquet, safetensors, PNG or checkpoint file that does not parse;
- bad manifests: `streetvision verify` mismatches (missing or different artifacts);
- incomplete: recovery runs that did not finish.
Target: 0 / 0 / 0. Prints one row per trial and the totals.

    python benchmarks/crash_injection.py [--trials 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = {  # tests/helpers.py's TINY_CONFIG with ExPLoRA on: every phase runs, in seconds each
    "demo": True,
    "experiments": {"demo": {"explora": {"enabled": True}}},
    "data": {"source": "synthetic", "synthetic": {"count": 300, "image_size": 48},
             "splits": {"train": 0.4, "val_select": 0.1, "val_calib": 0.15, "val_conformal": 0.25,
                        "val_test": 0.1}},
    "model": {"backbone": "vit_tiny_patch16_224", "img_size": 224, "head": "token", "init": "random",
              "backbone_kwargs": {"patch_size": 28, "embed_dim": 32, "depth": 2, "num_heads": 2,
                                  "class_token": True, "global_pool": "token"}},
    "train": {"max_epochs": 3, "batch_size": 32, "num_workers": 0, "patience": 0},
    "explora": {"out_dim": 64, "head_hidden": 64, "head_bottleneck": 16, "n_local_crops": 2, "max_epochs": 3,
                "batch_size": 32, "num_workers": 0, "probe_max_train": 200, "lora_rank": 4},
    "gate": {"max_epochs": 50},
    "scrc": {"alpha": 0.2, "delta": 0.2},
}


def environment() -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def snakemake_cmd(workdir: Path, config: Path, *extra: str) -> list[str]:
    return ["snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", str(config),
            "--cores", "2", *extra]


def file_is_whole(path: Path) -> bool:
    """Parse the file by its type; True when it reads completely."""
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.read_table(path)
        elif path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="np") as handle:
                for key in handle.keys():
                    handle.get_tensor(key)
        elif path.suffix == ".png":
            data = path.read_bytes()
            return data.startswith(b"\x89PNG") and data.rstrip().endswith(b"IEND\xaeB`\x82")
        elif path.suffix == ".ckpt":
            import torch

            torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix in (".jpg", ".jpeg"):
            from PIL import Image

            with Image.open(path) as image:
                image.load()
    except Exception:
        return False
    return True


def inspect_results(results: Path) -> dict:
    files = [p for p in results.rglob("*") if p.is_file() and not p.name.endswith(".svtmp")]
    torn = [str(p.relative_to(results)) for p in files if not file_is_whole(p)]
    verify = subprocess.run(["streetvision", "verify", str(results)], capture_output=True, text=True,
                            env=environment())
    mismatches = [line for line in verify.stdout.splitlines() if line.startswith("MISMATCH")]
    return {"files": len(files), "torn": torn, "bad_manifest_lines": mismatches}


def clean_run_seconds(config: Path, root: Path) -> float:
    workdir = root / "clean"
    workdir.mkdir()
    start = time.monotonic()
    subprocess.run(snakemake_cmd(workdir, config), env=environment(), capture_output=True, check=True)
    return time.monotonic() - start


def trial(config: Path, root: Path, seed: int, horizon: float) -> dict:
    import random

    workdir = root / f"trial{seed}"
    workdir.mkdir()
    delay = random.Random(seed).uniform(0.5, horizon)
    proc = subprocess.Popen(snakemake_cmd(workdir, config), env=environment(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
        killed_in = "finished before the kill"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_in = phase_in_progress(workdir)
    subprocess.run(snakemake_cmd(workdir, config, "--unlock"), env=environment(), capture_output=True)
    recovered = subprocess.run(snakemake_cmd(workdir, config, "--rerun-incomplete"), env=environment(),
                               capture_output=True, text=True)
    found = inspect_results(workdir / "results")
    return {"seed": seed, "kill_after_s": round(delay, 1), "killed_in": killed_in,
            "recovered": recovered.returncode == 0, **found}


def phase_in_progress(workdir: Path) -> str:
    """The jobs running when the kill landed: Snakemake's incomplete markers (base64 of the output path)."""
    import base64

    running = []
    for marker in (workdir / ".snakemake" / "incomplete").glob("*"):
        try:
            output = base64.urlsafe_b64decode(marker.name.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            continue
        running.append(Path(output).parent.name)  # results/<exp>/<phase>/manifest.json -> <phase>
    return ",".join(sorted(set(running))) or "between jobs"


def run_trials(trials: int, seed: int, config_dict: dict, keep: bool = False) -> list[dict]:
    root = Path(tempfile.mkdtemp(prefix="sv-crash-"))
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(config_dict))
    try:
        horizon = clean_run_seconds(config, root)
        return [trial(config, root, seed + i, horizon) for i in range(trials)]
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the trial directories")
    args = parser.parse_args()
    rows = run_trials(args.trials, args.seed, TINY, args.keep)
    print(f"{'seed':>4} {'kill at':>8}  {'killed in':<34} {'recovered':>9} {'files':>6} {'torn':>5} "
          f"{'bad manifest':>12}")
    for r in rows:
        print(f"{r['seed']:>4} {r['kill_after_s']:>7}s  {r['killed_in']:<34} {str(r['recovered']):>9} "
              f"{r['files']:>6} {len(r['torn']):>5} {len(r['bad_manifest_lines']):>12}")
    torn = sum(len(r["torn"]) for r in rows)
    bad = sum(len(r["bad_manifest_lines"]) for r in rows)
    failed = sum(not r["recovered"] for r in rows)
    print(f"totals over {len(rows)} trials: torn files {torn}, manifests pointing at missing/different "
          f"artifacts {bad}, runs that could not complete {failed} (target 0 / 0 / 0)")
    for r in rows:
        for item in r["torn"] + r["bad_manifest_lines"]:
            print(f"  seed {r['seed']}: {item}")


if __name__ == "__main__":
    main()
