"""Snakemake adapter for rule bundle: the snakemake object -> streetvision.phases.bundle.run_bundle."""

from streetvision.logs import log_to_file
from streetvision.phases import output_dir, step_dirs
from streetvision.phases.bundle import run_bundle

with log_to_file(snakemake.log[0]):
    run_bundle(
        **step_dirs(snakemake.input),
        out_dir=output_dir(snakemake.output),
        experiment=snakemake.wildcards.exp,
        workflow_dir=snakemake.params.workflow_dir,
        cfg=snakemake.params.cfg,
    )
