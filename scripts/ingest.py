"""Snakemake adapter for rule ingest: the snakemake object -> streetvision.phases.ingest.run_ingest."""

from streetvision.logs import log_to_file
from streetvision.phases import output_dir
from streetvision.phases.ingest import run_ingest

with log_to_file(snakemake.log[0]):
    run_ingest(
        out_dir=output_dir(snakemake.output),
        experiment=snakemake.wildcards.dataset,  # shared by the data set's experiments
        workflow_dir=snakemake.params.workflow_dir,
        cfg=snakemake.params.cfg,
        source_signature=snakemake.params.source_signature,
    )
