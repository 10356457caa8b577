"""Snakemake adapter for rule report: the snakemake object -> streetvision.phases.report.run_report."""

from pathlib import Path

from streetvision.logs import log_to_file
from streetvision.phases.report import run_report

with log_to_file(snakemake.log[0]):
    run_report(
        results_dir=Path(snakemake.output.manifest).parent.parent,
        experiments=snakemake.params.experiments,
        workflow_dir=snakemake.params.workflow_dir,
    )
