"""Snakemake adapter for rule explora: the snakemake object -> streetvision.phases.explora.run_explora."""

from streetvision.logs import log_to_file
from streetvision.phases import output_dir, step_dirs
from streetvision.phases.explora import run_explora

with log_to_file(snakemake.log[0]):
    run_explora(
        **step_dirs(snakemake.input),
        out_dir=output_dir(snakemake.output),
        experiment=snakemake.wildcards.exp,
        workflow_dir=snakemake.params.workflow_dir,
        cfg=snakemake.params.cfg,
        gpus=int(snakemake.resources.gpu),
        threads=snakemake.threads,
    )
