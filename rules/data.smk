rule data:
    """The index every later step reads: the ingested real images (+ the generated ones when synthesize is on)."""
    input:
        unpack(step_inputs("data")),
    output:
        manifest=step_manifest("data"),
    log:
        step_log("data"),
    benchmark:
        step_benchmark("data")
    conda:
        "../envs/streetvision.yaml"
    threads: 1
    resources:
        gpu=0,
        mem_mb=2000,
        runtime=30,
    params:
        cfg=step_config("data"),
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/data.py"
