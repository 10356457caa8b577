"""Snakemake adapter for phase 2 (threshold sweep)."""

from streetvision.calibration.phase2 import run_threshold_phase
from streetvision.logs import log_to_file

with log_to_file(snakemake.log[0]):  # noqa: F821 - injected by Snakemake
    run_threshold_phase(
        snakemake.params.phase1_dir,  # noqa: F821
        snakemake.params.out_dir,  # noqa: F821
        experiment=snakemake.wildcards.exp,  # noqa: F821
        workflow_dir=snakemake.params.workflow_dir,  # noqa: F821
    )
