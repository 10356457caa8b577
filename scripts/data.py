"""Snakemake adapter for the data phase."""

from streetvision.data.phase import run_data_phase
from streetvision.logs import log_to_file

with log_to_file(snakemake.log[0]):  # noqa: F821 - injected by Snakemake
    run_data_phase(
        snakemake.params.data,  # noqa: F821
        snakemake.params.out_dir,  # noqa: F821
        experiment=snakemake.wildcards.exp,  # noqa: F821
        workflow_dir=snakemake.params.workflow_dir,  # noqa: F821
    )
