"""Ingest benchmark: wall time and peak RSS of the data phase on 10k vs 100k NATIX-style images.

Generates parquet shards of small unique JPEGs (streamed, one shard at a time), then runs the
data phase on each size in a fresh subprocess and reports its peak RSS. Memory must stay bounded
(target <= 1 GB) as the count grows; the ratio line shows how it scales.

    python benchmarks/ingest.py [--sizes 10000 100000] [--workdir /tmp/sv-ingest-bench]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SHARD_ROWS = 5000


def make_shards(folder: Path, count: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    if (folder / "done").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    for shard, start in enumerate(range(0, count, SHARD_ROWS)):
        images, labels = [], []
        for _ in range(start, min(count, start + SHARD_ROWS)):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, format="JPEG")
            images.append(buffer.getvalue())
            labels.append(int(rng.integers(0, 2)))
        pq.write_table(pa.table({"image": images, "label": labels}), folder / f"train-{shard:05d}.parquet")
    (folder / "done").touch()
    return folder


def child(shards: str, out: str) -> None:
    """Run one ingest and print its own peak RSS (this process only)."""
    import yaml

    from streetvision.config import deep_merge, load_schema, resolve_experiments
    from streetvision.phases.ingest import run_ingest

    repo = Path(__file__).resolve().parents[1]
    config = deep_merge(yaml.safe_load((repo / "config/config.yaml").read_text()),
                        {"data": {"source": "natix_parquet", "path": shards}})
    data_cfg = resolve_experiments(config, load_schema(repo / "config/schema.yaml"))["demo"]["data"]
    start = time.perf_counter()
    manifest = json.loads(run_ingest(cfg={"data": data_cfg}, out_dir=out, experiment="bench").read_text())
    print(json.dumps({
        "wall_s": time.perf_counter() - start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "unique": manifest["metrics"]["unique_images"],
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workdir", default="/tmp/sv-ingest-bench")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    work = Path(args.workdir)
    rows = []
    for size in args.sizes:
        t0 = time.perf_counter()
        shards = make_shards(work / f"shards_{size}", size)
        generate_s = time.perf_counter() - t0
        out = work / f"out_{size}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        done = subprocess.run([sys.executable, __file__, "--child", str(shards), str(out)],
                              capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append({"images": size, "generate_s": generate_s, **result})
        print(f"{size:>8} images: ingest {result['wall_s']:7.1f} s ({size / result['wall_s']:7.0f} img/s), "
              f"peak RSS {result['peak_rss_mb']:7.1f} MB", flush=True)
    if len(rows) >= 2:
        small, large = rows[0], rows[-1]
        print(f"ratio {large['images'] // small['images']}x images -> time "
              f"x{large['wall_s'] / small['wall_s']:.2f}, "
              f"peak RSS x{large['peak_rss_mb'] / small['peak_rss_mb']:.2f} "
              f"(target: peak RSS <= 1024 MB; measured {large['peak_rss_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
