rule gate:
    """Phase 3: the trust-or-defer gate on stage-1 signals, fitted on val_calib (CPU, plain torch)."""
    input:
        baseline=phase_manifest("phase1_baseline"),
        thresholds=phase_manifest("phase2_thresholds"),
    output:
        manifest=phase_manifest("phase3_gate"),
        plot=report(
            f"{RESULTS}/{{exp}}/phase3_gate/risk_coverage.png",
            category="Gate",
            caption="../docs/report/gate.rst",
        ),
    log:
        phase_log("phase3_gate"),
    benchmark:
        phase_benchmark("phase3_gate")
    conda:
        "../envs/streetvision.yaml"
    threads: 1
    resources:
        gpu=0,
        mem_mb=2000,
        runtime=15,
    params:
        cfg=lambda wc: exp_config(wc, "gate"),
        phase1_dir=lambda wc: f"{RESULTS}/{wc.exp}/phase1_baseline",
        phase2_dir=lambda wc: f"{RESULTS}/{wc.exp}/phase2_thresholds",
        out_dir=lambda wc: f"{RESULTS}/{wc.exp}/phase3_gate",
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/gate.py"
