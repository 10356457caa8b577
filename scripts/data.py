"""Snakemake adapter for rule data: the snakemake object -> streetvision.phases.data.run_data."""

from streetvision.logs import log_to_file
from streetvision.phases import output_dir, step_dirs
from streetvision.phases.data import run_data

with log_to_file(snakemake.log[0]):
    run_data(
        **step_dirs(snakemake.input),
        out_dir=output_dir(snakemake.output),
        experiment=snakemake.wildcards.exp,
        workflow_dir=snakemake.params.workflow_dir,
        cfg=snakemake.params.cfg,
    )
