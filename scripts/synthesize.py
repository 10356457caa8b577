"""Snakemake adapter for rule synthesize (the gather) -> streetvision.phases.synthesize.run_synthesize."""

from pathlib import Path

from streetvision.logs import log_to_file
from streetvision.phases import output_dir
from streetvision.phases.synthesize import run_synthesize

with log_to_file(snakemake.log[0]):
    run_synthesize(
        ingest_dir=Path(snakemake.input.ingest).parent,
        shard_dirs=[Path(manifest).parent for manifest in snakemake.input.shards],
        out_dir=output_dir(snakemake.output),
        experiment=snakemake.wildcards.exp,
        workflow_dir=snakemake.params.workflow_dir,
        cfg=snakemake.params.cfg,
    )
