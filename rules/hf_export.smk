rule hf_export:
    """The bundle's model as a Hugging Face repo the stock NATIX miner serves, checked the miner's way."""
    input:
        unpack(step_inputs("hf_export")),
    output:
        manifest=step_manifest("hf_export"),
    log:
        step_log("hf_export"),
    benchmark:
        step_benchmark("hf_export")
    conda:
        "../envs/streetvision.yaml"
    threads: 1
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=30,
    params:
        cfg=step_config("hf_export"),
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/hf_export.py"
