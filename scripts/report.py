"""Snakemake adapter for the report."""

from streetvision.logs import log_to_file
from streetvision.report import run_report

with log_to_file(snakemake.log[0]):  # noqa: F821 - injected by Snakemake
    run_report(
        snakemake.params.results,  # noqa: F821
        snakemake.params.experiments,  # noqa: F821
        workflow_dir=snakemake.params.workflow_dir,  # noqa: F821
    )
