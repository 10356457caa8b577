rule explora:
    """Phase 4: ExPLoRA on train + unlabeled images; exports a merged, load-back-validated backbone."""
    input:
        unpack(step_inputs("explora")),
    output:
        manifest=step_manifest("explora"),
    log:
        step_log("explora"),
    benchmark:
        step_benchmark("explora")
    conda:
        "../envs/streetvision.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=480,
    params:
        cfg=step_config("explora"),
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/explora.py"
