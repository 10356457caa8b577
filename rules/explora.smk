rule explora:
    """Phase 4: ExPLoRA on train + unlabeled images; exports a merged, load-back-validated backbone."""
    input:
        data=phase_manifest("data"),
    output:
        manifest=phase_manifest("phase4_explora"),
    log:
        phase_log("phase4_explora"),
    benchmark:
        phase_benchmark("phase4_explora")
    conda:
        "../envs/streetvision.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=480,
    params:
        cfg=lambda wc: {k: EXPERIMENTS[wc.exp][k] for k in ("model", "explora")},
        data_dir=lambda wc: f"{RESULTS}/{wc.exp}/data",
        out_dir=lambda wc: f"{RESULTS}/{wc.exp}/phase4_explora",
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/explora.py"
