"""Snakemake adapter for phase 5 (temperature scaling + SCRC)."""

from streetvision.calibration.phase5 import run_scrc_phase
from streetvision.logs import log_to_file

with log_to_file(snakemake.log[0]):  # noqa: F821 - injected by Snakemake
    run_scrc_phase(
        snakemake.params.cfg,  # noqa: F821
        snakemake.params.phase1_dir,  # noqa: F821
        snakemake.params.phase2_dir,  # noqa: F821
        snakemake.params.phase3_dir,  # noqa: F821
        snakemake.params.out_dir,  # noqa: F821
        experiment=snakemake.wildcards.exp,  # noqa: F821
        workflow_dir=snakemake.params.workflow_dir,  # noqa: F821
    )
