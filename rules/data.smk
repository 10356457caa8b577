rule data:
    """Ingest the configured source: hash, dedupe, quarantine, split -> index.parquet."""
    output:
        manifest=phase_manifest("data"),
    log:
        phase_log("data"),
    benchmark:
        phase_benchmark("data")
    conda:
        "../envs/streetvision.yaml"
    threads: 1
    resources:
        gpu=0,
        mem_mb=2000,
        runtime=60,
    params:
        data=lambda wc: exp_config(wc, "data"),
        out_dir=lambda wc: f"{RESULTS}/{wc.exp}/data",
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/data.py"
