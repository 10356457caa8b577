rule ingest:
    """Read a data set's sources once for every experiment on it: hash, dedupe, quarantine, split."""
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
        source_signature=lambda wc: source_signature(DATASETS[wc.dataset]["data"]),
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/ingest.py"
