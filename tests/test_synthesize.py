"""The synthesize step: draws, journals, prompts and refusals (quick), and the real step on tiny random
SDXL / BLIP-2 / chat-LM folders built with the libraries' own classes (slow): determinism, shards, resume
after SIGKILL, parent inheritance, records, and the Snakemake run from shards to a phase 1 on both domains."""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import BIN, REPO, TINY_CONFIG, resolved_config, run_cli
from tiny_models import _clip_tokenizer, build_tiny_models

from streetvision import layout
from streetvision.config import ConfigError, deep_merge
from streetvision.data.splits import LeakError
from streetvision.domains import GENERATED_DOMAIN
from streetvision.phases.data import run_data
from streetvision.phases.ingest import run_ingest
from streetvision.phases.synthesize import run_synthesize, run_synthesize_shard
from streetvision.plan import describe_experiment
from streetvision.synthesize.draws import SynthesizeError, draw_images, parent_pool, shard_draws
from streetvision.synthesize.journal import Journal, JournalError
from streetvision.synthesize.models import MissingModelError, ModelRef, resolve_model
from streetvision.synthesize.prompts import fit_to_text_encoders

RECORD_FIELDS = ["sha256", "parent_sha256", "label", "split", "task", "prompt", "caption", "negative_prompt",
                 "model", "seed", "steps", "guidance", "strength", "width", "height"]


def pool_index(n=40):
    return pd.DataFrame({"sha256": [f"{i:064x}" for i in range(n)], "label": [i % 2 for i in range(n)],
                         "domain": ["real"] * (n - 4) + [GENERATED_DOMAIN] * 4})


# ------------------------------------------------------------------ quick: what is drawn

def test_draws_depend_on_seed_and_number_only_and_shards_partition_them():
    pool = parent_pool(pool_index())
    draws = draw_images(200, seed=3, i2i_share=0.5, pool=pool)
    assert draws == draw_images(200, seed=3, i2i_share=0.5, pool=pool)
    assert draws[:50] == draw_images(50, seed=3, i2i_share=0.5, pool=pool)  # count only adds images
    assert draws != draw_images(200, seed=4, i2i_share=0.5, pool=pool)
    labels = pd.Series([d.label for d in draws])
    assert 0.4 < labels.mean() < 0.6 and 0.35 < pd.Series([d.task == "i2i" for d in draws]).mean() < 0.65
    parents = pool_index().set_index("sha256")
    assert all(parents.loc[d.parent_sha256, "label"] == d.label for d in draws)
    for shards in (1, 3, 7):
        parts = [shard_draws(draws, k, shards) for k in range(shards)]
        assert sorted(d.number for part in parts for d in part) == list(range(200))
    with pytest.raises(SynthesizeError, match="shard 3"):
        shard_draws(draws, 3, 3)


def test_generated_images_are_never_parents_and_a_missing_label_is_named():
    index = pool_index()
    pool = parent_pool(index)
    generated = set(index.loc[index["domain"] == GENERATED_DOMAIN, "sha256"])
    assert not generated & set(pool[0] + pool[1])
    only_roadwork = index.assign(label=1)
    with pytest.raises(SynthesizeError, match=r"label \[0\]"):
        parent_pool(only_roadwork)


def test_journal_cuts_a_torn_last_line_and_refuses_a_bad_one_before_it(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    journal.append({"number": 0, "x": "a"})
    journal.append({"number": 1, "x": "b"})
    with open(journal.path, "ab") as handle:
        handle.write(b'{"number": 2, "x"')  # killed mid-write
    assert sorted(journal.read()) == [0, 1]
    journal.append({"number": 1, "x": "c"})
    assert journal.read()[1]["x"] == "c" and journal.path.read_bytes().count(b"\n") == 3
    journal.path.write_bytes(b'{"number": 0}\nnot json\n{"number": 1}\n')
    with pytest.raises(JournalError, match="line 2"):
        journal.read()


def test_prompts_are_cut_to_the_shorter_tokenizer(tmp_path):
    short = _clip_tokenizer(tmp_path / "a")
    longer = _clip_tokenizer(tmp_path / "b")
    longer.model_max_length = 200
    prompt = "Photorealistic dashcam footage of a road with orange cones and a lane closure " * 4
    fitted = fit_to_text_encoders(prompt, [longer, short])
    assert len(short(fitted)["input_ids"]) <= 77 < len(short(prompt)["input_ids"])
    assert prompt.lower().startswith(fitted[:40].lower())
    assert fit_to_text_encoders("a short prompt", [short]) == "a short prompt"


def test_a_missing_model_is_named_with_its_key(tmp_path):
    with pytest.raises(MissingModelError, match="synthesize.captioner.*nobody-here/no-such-model-3"):
        resolve_model(ModelRef("synthesize.captioner", "nobody-here/no-such-model-3", "config.json"))
    (tmp_path / "half").mkdir()
    with pytest.raises(MissingModelError, match="synthesize.t2i.model.*no model_index.json"):
        resolve_model(ModelRef("synthesize.t2i.model", str(tmp_path / "half"), "model_index.json"))
    with pytest.raises(MissingModelError, match="does not exist"):
        resolve_model(ModelRef("synthesize.rewriter", str(tmp_path / "gone"), "config.json"))


def test_plan_refuses_missing_models_and_idle_shards_before_any_job():
    cfg = resolved_config(REPO, {"synthesize": {"enabled": True, "count": 10, "rewriter": None,
                                                "captioner": "nobody-here/blip"}})
    with pytest.raises(ConfigError, match="synthesize.captioner"):
        describe_experiment("demo", cfg, demo=True)
    cfg = resolved_config(REPO, {"synthesize": {"enabled": True, "count": 2, "shards": 3}})
    with pytest.raises(ConfigError, match="synthesize.shards"):
        describe_experiment("demo", cfg, demo=True)
    off = resolved_config(REPO, {"synthesize": {"captioner": "nobody-here/blip"}})
    assert describe_experiment("demo", off, demo=True)  # not enabled: nothing to load, nothing checked


# ------------------------------------------------------------------ the real step on tiny models

@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.mktemp("models"))


def synth_cfg(models, **overrides):
    settings = {"enabled": True, "count": 6, "shards": 2, "steps": 2, "captioner": models["captioner"],
                "rewriter": models["rewriter"], "t2i": {"model": models["sdxl"], "width": 32, "height": 32},
                "i2i": {"model": models["sdxl"], "max_side": 40}, "caption_tokens": 12, "rewrite_tokens": 12}
    return deep_merge(TINY_CONFIG, {"synthesize": deep_merge(settings, overrides)})


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    results = tmp_path_factory.mktemp("ingested") / "results"
    run_ingest(cfg={"data": resolved_config(REPO)["data"]}, out_dir=results / "x" / "ingest", experiment="x")
    return results / "x" / "ingest"


def synthesize_all(cfg, ingest_dir, exp_dir):
    settings = {"synthesize": cfg["synthesize"]}
    shard_dirs = [exp_dir / "synthesize" / layout.Synthesize.shard(k) for k in range(cfg["synthesize"]["shards"])]
    for k, shard_dir in enumerate(shard_dirs):
        run_synthesize_shard(cfg=settings, ingest_dir=ingest_dir, out_dir=shard_dir, experiment="x", shard=k)
    run_synthesize(cfg=settings, ingest_dir=ingest_dir, shard_dirs=shard_dirs, out_dir=exp_dir / "synthesize",
                   experiment="x")
    return pd.read_parquet(exp_dir / "synthesize" / layout.Synthesize.RECORDS)


@pytest.mark.slow
def test_same_seed_same_images_any_shards_and_children_inherit_split_and_label(tiny_models, ingested):
    cfg = resolved_config(REPO, synth_cfg(tiny_models))
    first = synthesize_all(cfg, ingested, ingested.parent)
    assert first[RECORD_FIELDS[:-3]].notna().all().all() and set(first["task"]) == {"t2i", "i2i"}
    assert first.loc[first["task"] == "i2i", "strength"].eq(0.7).all()
    assert first.loc[first["task"] == "t2i", ["width", "height"]].eq(32).all().all()
    assert first["caption"].str.endswith(".").all()
    again = synthesize_all(resolve_one_shard(cfg), ingested, ingested.parent.parent / "again")
    assert again.drop(columns="path").equals(first.drop(columns="path"))  # same bytes, one shard or two
    other = synthesize_all(resolved_config(REPO, synth_cfg(tiny_models, seed=1)), ingested,
                           ingested.parent.parent / "other")
    assert set(other["sha256"]).isdisjoint(first["sha256"])

    run_data(cfg={"data": cfg["data"]}, ingest_dir=ingested, synthesize_dir=ingested.parent / "synthesize",
             out_dir=ingested.parent / "data", experiment="x")
    index = layout.load_index(ingested.parent / "data").set_index("sha256")
    children = index[index["parent_sha256"].notna()]
    assert len(children) == 6 and set(children["domain"]) == {GENERATED_DOMAIN}
    assert set(children["source"]) == {"t2i", "i2i"}
    parents = index.loc[children["parent_sha256"]]
    assert (parents["split"].to_numpy() == children["split"].to_numpy()).all()
    assert (parents["label"].to_numpy() == children["label"].to_numpy()).all()
    assert all(os.path.isfile(p) for p in children["path"])
    assert run_cli("streetvision", "verify", str(ingested.parent)).returncode == 0


def resolve_one_shard(cfg):
    return {**cfg, "synthesize": {**cfg["synthesize"], "shards": 1}}


@pytest.mark.slow
def test_generated_images_get_training_store_copies_in_the_data_step(tiny_models, ingested, tmp_path):
    """A generated image large enough for the store gets its reduced copy (the data step writes it); the PNG
    stays what evaluation and the validators' path read."""
    from streetvision.data import challenge as ch

    cfg = resolved_config(REPO, synth_cfg(tiny_models, count=1, shards=1, i2i_share=0.0,
                                          t2i={"width": 768, "height": 768}))
    exp = tmp_path / "results" / "x"
    synthesize_all(cfg, ingested, exp)
    run_data(cfg={"data": cfg["data"]}, ingest_dir=ingested, synthesize_dir=exp / "synthesize",
             out_dir=exp / "data", experiment="x")
    children = layout.load_index(exp / "data").dropna(subset=["parent_sha256"])
    assert len(children) == 1 and cfg["data"]["store"] == "reduced_raw"
    for row in children.itertuples():
        assert row.train_path.endswith(ch.STORE_SUFFIXES["reduced_raw"]) and row.challenge_path == row.path
        assert ch.load_raw(row.train_path).shape == (*ch.store_size(768, 768)[::-1], 3)
        assert Path(row.level0_path).read_bytes() == ch.level0_challenge_jpeg(row.path)  # its level 0, exact
    assert run_cli("streetvision", "verify", "--deep", str(exp)).returncode == 0
    run_data(cfg={"data": {**cfg["data"], "store": "original"}}, ingest_dir=ingested,
             synthesize_dir=exp / "synthesize", out_dir=exp / "data", experiment="x")
    children = layout.load_index(exp / "data").dropna(subset=["parent_sha256"])
    assert (children["train_path"] == children["path"]).all() and children["level0_path"].isna().all()
    assert not list((exp / "data" / layout.Data.IMAGES).rglob("*.npy"))  # the old copies went with the run


@pytest.mark.slow
def test_data_step_refuses_a_child_whose_parent_changed_split(tiny_models, ingested, tmp_path):
    cfg = resolved_config(REPO, synth_cfg(tiny_models, count=2, shards=1))
    exp = tmp_path / "results" / "x"
    synthesize_all(cfg, ingested, exp)
    records_path = exp / "synthesize" / layout.Synthesize.RECORDS
    records = pd.read_parquet(records_path)
    records.loc[0, "split"] = "val_test" if records.loc[0, "split"] != "val_test" else "train"
    records.to_parquet(records_path)
    with pytest.raises(LeakError, match="image 0"):
        run_data(cfg={"data": cfg["data"]}, ingest_dir=ingested, synthesize_dir=exp / "synthesize",
                 out_dir=exp / "data", experiment="x")


@pytest.mark.slow
def test_gather_refuses_missing_shards_and_changed_bytes(tiny_models, ingested, tmp_path):
    cfg = resolved_config(REPO, synth_cfg(tiny_models, count=4, shards=2, rewriter=None))
    exp = tmp_path / "results" / "x"
    records = synthesize_all(cfg, ingested, exp)
    assert set(records["rewrite"]) == {"template"}  # no LLM: the label templates
    assert records.loc[records["label"] == 1, "prompt"].str.contains("roadwork").all()
    shard0 = exp / "synthesize" / layout.Synthesize.shard(0)
    with pytest.raises(SynthesizeError, match="not exactly"):
        run_synthesize(cfg={"synthesize": cfg["synthesize"]}, ingest_dir=ingested, shard_dirs=[shard0],
                       out_dir=exp / "synthesize", experiment="x")
    image = next((shard0 / layout.Synthesize.IMAGES).rglob("*.png"))
    image.write_bytes(image.read_bytes() + b"x")
    with pytest.raises(SynthesizeError, match="re-run its shard"):
        run_synthesize(cfg={"synthesize": cfg["synthesize"]}, ingest_dir=ingested,
                       shard_dirs=[shard0, exp / "synthesize" / layout.Synthesize.shard(1)],
                       out_dir=exp / "synthesize", experiment="x")


SHARD_JOB = """
import json, sys
from pathlib import Path
from streetvision.phases.synthesize import run_synthesize_shard
cfg, ingest_dir, out_dir = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), Path(sys.argv[3])
run_synthesize_shard(cfg=cfg, ingest_dir=ingest_dir, out_dir=out_dir, experiment="x", shard=0)
"""


@pytest.mark.slow
def test_a_shard_killed_mid_run_resumes_without_regenerating_finished_images(tiny_models, ingested, tmp_path,
                                                                            caplog):
    cfg = resolved_config(REPO, synth_cfg(tiny_models, count=10, shards=1, steps=6,
                                          t2i={"width": 64, "height": 64}, progress_interval_s=1e-6))
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps({"synthesize": cfg["synthesize"]}))
    shard_dir = tmp_path / "results/x/synthesize" / layout.Synthesize.shard(0)
    images_journal = shard_dir / layout.Synthesize.WORK / "images.jsonl"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    job = subprocess.Popen([sys.executable, "-c", SHARD_JOB, str(cfg_path), str(ingested), str(shard_dir)],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and job.poll() is None:
        if images_journal.is_file() and images_journal.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    finished = Journal(images_journal).read()
    assert 3 <= len(finished) < 10, "the kill must land mid-shard"
    before = {n: ((shard_dir / e["path"]).stat().st_mtime_ns, (shard_dir / e["path"]).read_bytes())
              for n, e in finished.items()}
    assert not (shard_dir / "manifest.json").exists()

    with caplog.at_level(logging.INFO, logger="streetvision.progress"):
        run_synthesize_shard(cfg={"synthesize": cfg["synthesize"]}, ingest_dir=ingested, out_dir=shard_dir,
                             experiment="x", shard=0)
    # progress lines of the resumed stage count the killed run's images as done; a rate and an ETA each
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("synthesize images:")]
    assert progress[0].startswith(f"synthesize images: {len(finished) + 1}/10 images")
    assert progress[-1].startswith("synthesize images: 10/10 images (100%)")
    assert all(re.search(r", [0-9.e+-]+ images/s, ETA \d+:\d\d:\d\d$", line) for line in progress[1:])
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    assert manifest["metrics"]["generated_now"] == 10 - len(finished) and manifest["metrics"]["resumed_work"]
    for number, (mtime, data) in before.items():
        path = shard_dir / Journal(images_journal).read()[number]["path"]
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == data
    lines = [json.loads(line) for line in images_journal.read_text().splitlines()]
    assert sorted(entry["number"] for entry in lines) == list(range(10))  # nothing generated twice

    fresh = tmp_path / "fresh/results/x/synthesize" / layout.Synthesize.shard(0)
    run_synthesize_shard(cfg={"synthesize": cfg["synthesize"]}, ingest_dir=ingested, out_dir=fresh,
                         experiment="x", shard=0)
    resumed = pd.read_parquet(shard_dir / layout.Synthesize.RECORDS)
    assert resumed.equals(pd.read_parquet(fresh / layout.Synthesize.RECORDS))  # as if never killed


@pytest.mark.slow
def test_snakemake_runs_two_shards_then_phase1_on_both_domains(tiny_models, tmp_path):
    config = deep_merge(synth_cfg(tiny_models, count=16), {"hf_export": {"enabled": False}})
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    args = ["snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--configfile",
            str(tmp_path / "tiny.yaml"), "--cores", "2"]
    target = "results/demo/phase1_baseline/manifest.json"
    done = run_cli(*args, target, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    exp = tmp_path / "results/demo"
    for k in (0, 1):
        shard = json.loads((exp / "synthesize" / layout.Synthesize.shard(k) / "manifest.json").read_text())
        assert shard["metrics"]["images"] == 8
    index = layout.load_index(exp / "data")
    assert set(index["domain"]) == {"real", GENERATED_DOMAIN}
    assert index.loc[index["domain"] == GENERATED_DOMAIN, "source"].value_counts().sum() == 16
    predictions = pd.concat(layout.predictions_of(exp / "phase1_baseline", split)
                            for split in layout.Baseline.PREDICTED_SPLITS)
    assert GENERATED_DOMAIN in set(predictions["domain"])
    assert "synthesize demo: shard 0/2: 8 images" in done.stderr
    assert "Nothing to be done" in run_cli(*args, target, "-n").stdout

    broken = deep_merge(config, {"synthesize": {"rewriter": str(tmp_path / "no-llm-here")}})
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(broken))
    refused = run_cli(*args, target)
    assert refused.returncode != 0 and "synthesize.rewriter" in refused.stderr
    assert "rule synthesize_shard" not in refused.stderr  # stopped before any job
