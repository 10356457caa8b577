rule gate:
    """Phase 3: the trust-or-defer gate on stage-1 signals, fitted on val_calib (CPU, plain torch)."""
    input:
        unpack(step_inputs("gate")),
    output:
        manifest=step_manifest("gate"),
        plot=report(
            f"{step_folder('gate')}/risk_coverage.png",
            category="Gate",
            caption="../docs/report/gate.rst",
        ),
    log:
        step_log("gate"),
    benchmark:
        step_benchmark("gate")
    conda:
        "../envs/streetvision.yaml"
    threads: 1
    resources:
        gpu=0,
        mem_mb=2000,
        runtime=15,
    params:
        cfg=step_config("gate"),
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/gate.py"
