"""Snakemake adapter for rule gate: the snakemake object -> streetvision.phases.gate.run_gate."""

from streetvision.logs import log_to_file
from streetvision.phases import output_dir, step_dirs
from streetvision.phases.gate import run_gate

with log_to_file(snakemake.log[0]):
    run_gate(
        **step_dirs(snakemake.input),
        out_dir=output_dir(snakemake.output),
        experiment=snakemake.wildcards.exp,
        workflow_dir=snakemake.params.workflow_dir,
        cfg=snakemake.params.cfg,
    )
