rule data:
    """Ingest the configured source: hash, dedupe, quarantine, split -> index.parquet."""
    input:
        unpack(step_inputs("data")),
    output:
        manifest=step_manifest("data"),
    log:
        step_log("data"),
    benchmark:
        step_benchmark("data")
    conda:
        "../envs/streetvision.yaml"
    threads: 1
    resources:
        gpu=0,
        mem_mb=2000,
        runtime=60,
    params:
        cfg=step_config("data"),
        # Files added, removed or replaced under data.path re-run the step ("Params have changed").
        source_signature=lambda wc: source_signature(EXPERIMENTS[wc.exp]["data"]),
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/data.py"
