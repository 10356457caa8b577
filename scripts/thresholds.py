"""Snakemake adapter for rule thresholds: the snakemake object -> phases.thresholds.run_thresholds."""

from streetvision.logs import log_to_file
from streetvision.phases import output_dir, step_dirs
from streetvision.phases.thresholds import run_thresholds

with log_to_file(snakemake.log[0]):
    run_thresholds(
        **step_dirs(snakemake.input),
        out_dir=output_dir(snakemake.output),
        experiment=snakemake.wildcards.exp,
        workflow_dir=snakemake.params.workflow_dir,
    )
