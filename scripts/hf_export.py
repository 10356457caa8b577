"""Snakemake adapter for rule hf_export: the snakemake object -> phases.hf_export.run_hf_export."""

from streetvision.logs import log_to_file
from streetvision.phases import output_dir, step_dirs
from streetvision.phases.hf_export import run_hf_export

with log_to_file(snakemake.log[0]):
    run_hf_export(
        **step_dirs(snakemake.input),
        out_dir=output_dir(snakemake.output),
        experiment=snakemake.wildcards.exp,
        workflow_dir=snakemake.params.workflow_dir,
        cfg=snakemake.params.cfg,
    )
