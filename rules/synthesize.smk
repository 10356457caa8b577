rule synthesize_shard:
    """Shard {shard} of the synthesize step: caption, rewrite, SDXL-generate images k = shard mod shards."""
    input:
        unpack(step_inputs("synthesize")),
    output:
        manifest=shard_manifest(),
    log:
        f"{RESULTS}/{{exp}}/{layout.LOGS}/synthesize_shard_{{shard}}.log",
    benchmark:
        f"{RESULTS}/{{exp}}/{layout.BENCHMARKS}/synthesize_shard_{{shard}}.tsv"
    conda:
        "../envs/streetvision.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=lambda wc: synthesize_runtime_minutes(EXPERIMENTS[wc.exp]),
    params:
        cfg=step_config("synthesize"),
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/synthesize_shard.py"


rule synthesize:
    """Gather the synthesize shards: every image once, its bytes checked -> synthesize/records.parquet."""
    input:
        unpack(step_inputs("synthesize")),
        shards=shard_manifests,
    output:
        manifest=step_manifest("synthesize"),
    log:
        step_log("synthesize"),
    benchmark:
        step_benchmark("synthesize")
    conda:
        "../envs/streetvision.yaml"
    threads: 1
    resources:
        gpu=0,
        mem_mb=2000,
        runtime=30,
    params:
        cfg=step_config("synthesize"),
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/synthesize.py"
