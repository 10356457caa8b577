rule ingest:
    """Read the configured sources: hash, dedupe, quarantine, split -> ingest/index.parquet."""
    input:
        unpack(step_inputs("ingest")),
    output:
        manifest=step_manifest("ingest"),
    log:
        step_log("ingest"),
    benchmark:
        step_benchmark("ingest")
    conda:
        "../envs/streetvision.yaml"
    threads: 1
    resources:
        gpu=0,
        mem_mb=2000,
        runtime=60,
    params:
        cfg=step_config("ingest"),
        # Files added, removed or replaced under data.path re-run the step ("Params have changed").
        source_signature=lambda wc: source_signature(EXPERIMENTS[wc.exp]["data"]),
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/ingest.py"
