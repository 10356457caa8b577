rule scrc:
    """Phase 5: temperature scaling (val_calib) + selective risk control (val_conformal)."""
    input:
        baseline=phase_manifest("phase1_baseline"),
        thresholds=phase_manifest("phase2_thresholds"),
        gate=phase_manifest("phase3_gate"),
    output:
        manifest=phase_manifest("phase5_scrc"),
        reliability=report(
            f"{RESULTS}/{{exp}}/phase5_scrc/reliability.png",
            category="Calibration",
            caption="../docs/report/reliability.rst",
        ),
        risk_coverage=report(
            f"{RESULTS}/{{exp}}/phase5_scrc/risk_coverage.png",
            category="Calibration",
            caption="../docs/report/scrc.rst",
        ),
    log:
        phase_log("phase5_scrc"),
    benchmark:
        phase_benchmark("phase5_scrc")
    conda:
        "../envs/streetvision.yaml"
    threads: 1
    resources:
        gpu=0,
        mem_mb=2000,
        runtime=15,
    params:
        cfg=lambda wc: exp_config(wc, "scrc"),
        phase1_dir=lambda wc: f"{RESULTS}/{wc.exp}/phase1_baseline",
        phase2_dir=lambda wc: f"{RESULTS}/{wc.exp}/phase2_thresholds",
        phase3_dir=lambda wc: f"{RESULTS}/{wc.exp}/phase3_gate",
        out_dir=lambda wc: f"{RESULTS}/{wc.exp}/phase5_scrc",
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/calibration.py"
