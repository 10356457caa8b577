rule thresholds:
    """Phase 2: exact MCC-optimal threshold on val_calib (CPU, no torch)."""
    input:
        baseline=phase_manifest("phase1_baseline"),
    output:
        manifest=phase_manifest("phase2_thresholds"),
        plot=report(
            f"{RESULTS}/{{exp}}/phase2_thresholds/sweep.png",
            category="Thresholds",
            caption="../docs/report/sweep.rst",
        ),
    log:
        phase_log("phase2_thresholds"),
    benchmark:
        phase_benchmark("phase2_thresholds")
    conda:
        "../envs/streetvision.yaml"
    threads: 1
    resources:
        gpu=0,
        mem_mb=2000,
        runtime=15,
    params:
        phase1_dir=lambda wc: f"{RESULTS}/{wc.exp}/phase1_baseline",
        out_dir=lambda wc: f"{RESULTS}/{wc.exp}/phase2_thresholds",
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/thresholds.py"
