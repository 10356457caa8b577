rule report:
    """Summary table of every experiment + figures for `snakemake --report`."""
    input:
        [path for steps in report_manifests().values() for path in steps.values()],
    output:
        manifest=f"{RESULTS}/report/manifest.json",
        summary_json=f"{RESULTS}/summary.json",
        summary_md=f"{RESULTS}/summary.md",
        confusion=report(
            expand(f"{RESULTS}/report/{{exp}}/confusion.png", exp=list(EXPERIMENTS)),
            category="Summary",
            subcategory="Confusion matrices",
            caption="../docs/report/confusion.rst",
        ),
        curves=report(
            expand(f"{RESULTS}/report/{{exp}}/curves.png", exp=list(EXPERIMENTS)),
            category="Summary",
            subcategory="Training curves",
            caption="../docs/report/curves.rst",
        ),
    log:
        f"{RESULTS}/{layout.LOGS}/report.log",
    benchmark:
        f"{RESULTS}/{layout.BENCHMARKS}/report.tsv"
    conda:
        "../envs/streetvision.yaml"
    threads: 1
    resources:
        gpu=0,
        mem_mb=1000,
        runtime=10,
    params:
        manifests=report_manifests(),
        replicates={exp: cfg.get("replicate") for exp, cfg in EXPERIMENTS.items()},
        sweeps={exp: cfg.get("sweep") for exp, cfg in EXPERIMENTS.items()},
        workflow_dir=WORKFLOW_DIR,
    script:
        "../scripts/report.py"
