rule thresholds:
    """Phase 2: exact MCC-optimal threshold on val_calib (CPU, no torch)."""
    input:
        unpack(step_inputs("thresholds")),
    output:
        manifest=step_manifest("thresholds"),
        plot=report(
            f"{step_folder('thresholds')}/sweep.png",
            category="Thresholds",
            caption="../docs/report/sweep.rst",
        ),
    log:
        step_log("thresholds"),
    benchmark:
        step_benchmark("thresholds")
    conda:
        "../envs/streetvision.yaml"
    threads: 1
    resources:
        gpu=0,
        mem_mb=2000,
        runtime=15,
    params:
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/thresholds.py"
