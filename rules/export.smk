rule bundle:
    """Phase 6: the servable bundle (one policy), reloaded verified and checked against phase 1."""
    input:
        data=phase_manifest("data"),
        baseline=phase_manifest("phase1_baseline"),
        thresholds=phase_manifest("phase2_thresholds"),
        gate=phase_manifest("phase3_gate"),
        scrc=phase_manifest("phase5_scrc"),
    output:
        manifest=phase_manifest("phase6_bundle"),
    log:
        phase_log("phase6_bundle"),
    benchmark:
        phase_benchmark("phase6_bundle")
    conda:
        "../envs/streetvision.yaml"
    threads: 1
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=30,
    params:
        cfg=lambda wc: exp_config(wc, "bundle"),
        data_dir=lambda wc: f"{RESULTS}/{wc.exp}/data",
        phase1_dir=lambda wc: f"{RESULTS}/{wc.exp}/phase1_baseline",
        phase2_dir=lambda wc: f"{RESULTS}/{wc.exp}/phase2_thresholds",
        phase3_dir=lambda wc: f"{RESULTS}/{wc.exp}/phase3_gate",
        phase5_dir=lambda wc: f"{RESULTS}/{wc.exp}/phase5_scrc",
        out_dir=lambda wc: f"{RESULTS}/{wc.exp}/phase6_bundle",
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/export.py"
