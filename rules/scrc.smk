rule scrc:
    """Phase 5: selective risk control certified on val_conformal (phase 2's temperature)."""
    input:
        unpack(step_inputs("scrc")),
    output:
        manifest=step_manifest("scrc"),
        reliability=report(
            f"{step_folder('scrc')}/reliability.png",
            category="Calibration",
            caption="../docs/report/reliability.rst",
        ),
        risk_coverage=report(
            f"{step_folder('scrc')}/risk_coverage.png",
            category="Calibration",
            caption="../docs/report/scrc.rst",
        ),
    log:
        step_log("scrc"),
    benchmark:
        step_benchmark("scrc")
    conda:
        "../envs/streetvision.yaml"
    threads: 1
    resources:
        gpu=0,
        mem_mb=2000,
        runtime=15,
    params:
        cfg=step_config("scrc"),
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/scrc.py"
