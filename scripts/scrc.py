"""Snakemake adapter for rule scrc: the snakemake object -> streetvision.phases.scrc.run_scrc."""

from streetvision.logs import log_to_file
from streetvision.phases import output_dir, step_dirs
from streetvision.phases.scrc import run_scrc

with log_to_file(snakemake.log[0]):
    run_scrc(
        **step_dirs(snakemake.input),
        out_dir=output_dir(snakemake.output),
        experiment=snakemake.wildcards.exp,
        workflow_dir=snakemake.params.workflow_dir,
        cfg=snakemake.params.cfg,
    )
