rule bundle:
    """Phase 6: the servable bundle (one policy), reloaded verified and checked against phase 1."""
    input:
        unpack(step_inputs("bundle")),
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
        cfg=step_config("bundle"),
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/bundle.py"
