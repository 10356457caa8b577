rule bundle:
    """Phase 6: the servable bundle (one policy), reloaded verified and checked against phase 1."""
    input:
        data=step_manifest("data"),
        baseline=step_manifest("baseline"),
        thresholds=step_manifest("thresholds"),
        gate=manifest_if("gate", bundle_uses_gate),
        scrc=manifest_if("scrc", bundle_uses_scrc),
    output:
        manifest=step_manifest("bundle"),
    log:
        step_log("bundle"),
    benchmark:
        step_benchmark("bundle")
    conda:
        "../envs/streetvision.yaml"
    threads: 1
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=30,
    params:
        cfg=lambda wc: exp_config(wc, "bundle", "challenge", "demo"),
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/bundle.py"
