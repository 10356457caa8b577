"""Snakemake adapter for rule ingest: the snakemake object -> streetvision.phases.ingest.run_ingest."""

from streetvision.logs import log_to_file
from streetvision.phases import output_dir, step_dirs
from streetvision.phases.ingest import run_ingest

with log_to_file(snakemake.log[0]):
    run_ingest(
        **step_dirs(snakemake.input),
        out_dir=output_dir(snakemake.output),
        experiment=snakemake.wildcards.exp,
        workflow_dir=snakemake.params.workflow_dir,
        cfg=snakemake.params.cfg,
        source_signature=snakemake.params.source_signature,
    )
