"""Step ``synthesize``: validator-like SDXL images from the ingested real images, as ``shards`` jobs
(``run_synthesize_shard``, one GPU each) gathered by ``run_synthesize``.

Image k belongs to shard k mod shards and is fully decided by (synthesize.seed, k) and the parent pool, so
a shard resumes image by image (``synthesize/shard.py``) and the gathered set does not depend on the number
of shards. A generated image inherits its parent's split and label: leak-free by construction.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import pandas as pd

from streetvision import layout
from streetvision.io.atomic import atomic_write_json
from streetvision.io.hashing import config_hash, sha256_file
from streetvision.io.manifest import PhaseRecorder, read_manifest
from streetvision.logs import log_result
from streetvision.phases import step_recorder
from streetvision.synthesize.draws import SynthesizeError, draw_images, parent_pool, shard_draws
from streetvision.synthesize.models import check_models
from streetvision.synthesize.shard import ShardRun, run_shard
from streetvision.train.devices import job_device

STEP = "synthesize"
SHARD_PHASE = "synthesize_shard"  # the manifest phase of a shard job (results/<exp>/synthesize/shards/<k>/)

log = logging.getLogger(__name__)

RECORD_COLUMNS = ["number", "sha256", "parent_sha256", "label", "split", "task", "prompt", "caption",
                  "rewrite", "negative_prompt", "model", "seed", "steps", "guidance", "strength", "width",
                  "height", "path", "bytes"]
# What decides a shard's images; count and shards only decide which numbers it makes.
_NOT_IN_IMAGES = ("enabled", "count", "shards", "progress_interval_s")


def _work_key(settings: dict, ingest_dir: Path) -> dict:
    return {"settings": config_hash({k: v for k, v in settings.items() if k not in _NOT_IN_IMAGES}),
            "ingest_index": sha256_file(Path(ingest_dir) / layout.Data.INDEX)}


def _reset_stale_work(shard_dir: Path, key: dict) -> bool:
    """Keep the shard's journals and images only when they were made for ``key``; True when kept."""
    key_path = shard_dir / layout.Synthesize.KEY
    if key_path.is_file() and _read_key(key_path) == key:
        return True
    for scratch in (layout.Synthesize.WORK, layout.Synthesize.IMAGES):
        shutil.rmtree(shard_dir / scratch, ignore_errors=True)
    atomic_write_json(key_path, key)
    return False


def _read_key(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def run_synthesize_shard(*, cfg: dict, ingest_dir: str | Path, out_dir: str | Path, experiment: str,
                         shard: int, workflow_dir: str | None = None) -> Path:
    settings, ingest_dir, out_dir = cfg["synthesize"], Path(ingest_dir), Path(out_dir)
    index = layout.load_index(ingest_dir).set_index("sha256", drop=False)
    draws = shard_draws(draw_images(settings["count"], settings["seed"], settings["i2i_share"],
                                    parent_pool(index)), shard, settings["shards"])
    folders = check_models(settings)
    device = job_device(SHARD_PHASE)
    recorder = PhaseRecorder(out_dir, SHARD_PHASE, experiment, cfg, seed=settings["seed"],
                             consumes=[layout.manifest_of(ingest_dir)], workflow_dir=workflow_dir,
                             device=device, scratch=[layout.Synthesize.WORK, layout.Synthesize.IMAGES])
    resumed = _reset_stale_work(out_dir, _work_key(settings, ingest_dir))
    run = ShardRun(draws=draws, parent_paths=index["challenge_path"].to_dict(), settings=settings,
                   folders=folders, work_dir=out_dir / layout.Synthesize.WORK,
                   image_dir=out_dir / layout.Synthesize.IMAGES, device=device)
    started = time.monotonic()
    _reset_gpu_peak(device)
    records, made_now = run_shard(run)
    seconds = time.monotonic() - started
    table = pd.DataFrame(records)
    table["split"] = index.loc[table["parent_sha256"], "split"].to_numpy() if len(table) else []
    recorder.write_parquet(layout.Synthesize.RECORDS, table.reindex(columns=RECORD_COLUMNS))
    rate = made_now / seconds if made_now and seconds > 0 else None
    recorder.metrics.update({
        "shard": shard, "images": len(table), "generated_now": made_now, "resumed_work": resumed,
        "seconds": round(seconds, 3), "images_per_s": rate,
        "by_task": table["task"].value_counts().to_dict() if len(table) else {},
        "peak_gpu_memory_bytes": _gpu_peak(device), "gpu_memory_after_stage_bytes": run.memory_after_stage,
    })
    recorder.extra["models"] = {key: str(folder) for key, folder in folders.items()}
    rate_text = f"{rate:.3f} images/s" if rate else "nothing left to generate"
    log_result(STEP, experiment, f"shard {shard}/{settings['shards']}: {len(table)} images "
                                 f"({made_now} made now on {device}, {rate_text})")
    return recorder.finish()


def _reset_gpu_peak(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def _gpu_peak(device: str) -> int | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return int(torch.cuda.max_memory_allocated())


def run_synthesize(*, cfg: dict, ingest_dir: str | Path, shard_dirs: list[str | Path], out_dir: str | Path,
                   experiment: str, workflow_dir: str | None = None) -> Path:
    """Gather the shards: every number 0..count-1 exactly once, every image's bytes as recorded; the images
    are linked (copied across file systems) into ``images/``, listed in the manifest and in
    ``records.parquet``."""
    settings, out_dir = cfg["synthesize"], Path(out_dir)
    shard_dirs = [Path(d) for d in shard_dirs]
    recorder = step_recorder(STEP, out_dir, experiment, cfg, seed=settings["seed"], workflow_dir=workflow_dir,
                             consumes=[layout.manifest_of(ingest_dir), *map(layout.manifest_of, shard_dirs)],
                             scratch=[layout.Synthesize.SHARDS])
    parts = []
    for shard_dir in shard_dirs:
        manifest = read_manifest(layout.manifest_of(shard_dir))
        if manifest["config"]["synthesize"] != settings:
            raise SynthesizeError(f"{shard_dir}: made with other synthesize settings than this gather's; "
                                  "re-run its shard job")
        part = pd.read_parquet(shard_dir / layout.Synthesize.RECORDS)
        part["path"] = [str(shard_dir / p) for p in part["path"]]
        parts.append(part)
    records = pd.concat(parts, ignore_index=True).sort_values("number", ignore_index=True)
    expected = list(range(settings["count"]))
    if records["number"].tolist() != expected:
        raise SynthesizeError(f"{out_dir}: the shards hold images {_span(records['number'])}, not exactly "
                              f"0..{settings['count'] - 1} once each (synthesize.count, synthesize.shards)")
    records["path"] = [_link_image(recorder, Path(source), sha)
                       for source, sha in zip(records["path"], records["sha256"], strict=True)]
    recorder.write_parquet(layout.Synthesize.RECORDS, records.reindex(columns=RECORD_COLUMNS))
    recorder.metrics.update({
        "images": len(records), "shards": len(shard_dirs),
        "by_task": records["task"].value_counts().to_dict(),
        "by_label": {str(k): int(v) for k, v in records["label"].value_counts().items()},
        "by_split": records["split"].value_counts().to_dict(),
    })
    tasks = ", ".join(f"{task} {n}" for task, n in sorted(recorder.metrics["by_task"].items()))
    log_result(STEP, experiment, f"{len(records)} images from {len(shard_dirs)} shard(s) ({tasks})")
    return recorder.finish()


def _span(numbers: pd.Series) -> str:
    duplicated = sorted(set(numbers[numbers.duplicated()]))
    return f"{len(numbers)} numbers" + (f", {duplicated[:5]} more than once" if duplicated else "")


def _link_image(recorder: PhaseRecorder, source: Path, sha: str) -> str:
    if sha256_file(source) != sha:
        raise SynthesizeError(f"{source}: its bytes are not the recorded image {sha[:12]}; re-run its shard")
    relative = f"{layout.Synthesize.IMAGES}/{sha[:2]}/{sha}.png"
    target = recorder.path(relative)
    target.unlink(missing_ok=True)
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copyfile(source, target)
    recorder.add_artifact(relative)
    return relative
