rule baseline:
    """Phase 1: train the stage-1 classifier; export weights, predictions and features."""
    input:
        unpack(step_inputs("baseline")),
    output:
        manifest=step_manifest("baseline"),
    log:
        step_log("baseline"),
    benchmark:
        step_benchmark("baseline")
    conda:
        "../envs/streetvision.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        cfg=step_config("baseline"),
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/baseline.py"
