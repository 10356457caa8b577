"""Snakemake adapter for rule baseline: the snakemake object -> streetvision.phases.baseline.run_baseline."""

from streetvision.logs import log_to_file
from streetvision.phases import output_dir, step_dirs
from streetvision.phases.baseline import run_baseline

with log_to_file(snakemake.log[0]):
    run_baseline(
        **step_dirs(snakemake.input),
        out_dir=output_dir(snakemake.output),
        experiment=snakemake.wildcards.exp,
        workflow_dir=snakemake.params.workflow_dir,
        cfg=snakemake.params.cfg,
        gpus=int(snakemake.resources.gpu),
        threads=snakemake.threads,
    )
