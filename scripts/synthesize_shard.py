"""Snakemake adapter for rule synthesize_shard -> streetvision.phases.synthesize.run_synthesize_shard."""

from streetvision.logs import log_to_file
from streetvision.phases import output_dir, step_dirs
from streetvision.phases.synthesize import run_synthesize_shard

with log_to_file(snakemake.log[0]):
    run_synthesize_shard(
        **step_dirs(snakemake.input),
        out_dir=output_dir(snakemake.output),
        experiment=snakemake.wildcards.exp,
        shard=int(snakemake.wildcards.shard),
        workflow_dir=snakemake.params.workflow_dir,
        cfg=snakemake.params.cfg,
    )
