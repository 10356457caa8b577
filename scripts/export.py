"""Snakemake adapter for phase 6 (bundle export)."""

from streetvision.bundle.export import run_bundle_phase
from streetvision.logs import log_to_file

p = snakemake.params  # noqa: F821 - injected by Snakemake
with log_to_file(snakemake.log[0]):  # noqa: F821
    run_bundle_phase(
        p.cfg,
        p.data_dir,
        p.phase1_dir,
        p.phase2_dir,
        p.phase3_dir,
        p.phase5_dir,
        p.out_dir,
        experiment=snakemake.wildcards.exp,  # noqa: F821
        workflow_dir=p.workflow_dir,
    )
