rule baseline:
    """Phase 1: train the stage-1 classifier; export weights, predictions and features."""
    input:
        data=phase_manifest("data"),
        explora=explora_input,
    output:
        manifest=phase_manifest("phase1_baseline"),
    log:
        phase_log("phase1_baseline"),
    benchmark:
        phase_benchmark("phase1_baseline")
    conda:
        "../envs/streetvision.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        cfg=lambda wc: {k: EXPERIMENTS[wc.exp][k] for k in ("model", "train")},
        data_dir=lambda wc: f"{RESULTS}/{wc.exp}/data",
        out_dir=lambda wc: f"{RESULTS}/{wc.exp}/phase1_baseline",
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/baseline.py"
