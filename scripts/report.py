"""Snakemake adapter for rule report: the snakemake object -> streetvision.phases.report.run_report."""

from streetvision.logs import log_to_file
from streetvision.phases import output_dir
from streetvision.phases.report import run_report

with log_to_file(snakemake.log[0]):
    run_report(
        manifests=snakemake.params.manifests,
        replicates=snakemake.params.replicates,
        sweeps=snakemake.params.sweeps,
        out_dir=output_dir(snakemake.output),
        workflow_dir=snakemake.params.workflow_dir,
    )
