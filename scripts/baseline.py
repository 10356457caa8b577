"""Snakemake adapter for phase 1 (baseline training)."""

from pathlib import Path

from streetvision.logs import log_to_file
from streetvision.train.phase1 import run_baseline_phase

explora = snakemake.input.get("explora")  # noqa: F821 - injected by Snakemake
with log_to_file(snakemake.log[0]):  # noqa: F821
    run_baseline_phase(
        snakemake.params.cfg,  # noqa: F821
        snakemake.params.data_dir,  # noqa: F821
        snakemake.params.out_dir,  # noqa: F821
        experiment=snakemake.wildcards.exp,  # noqa: F821
        gpus=int(snakemake.resources.gpu),  # noqa: F821
        workflow_dir=snakemake.params.workflow_dir,  # noqa: F821
        explora_dir=Path(explora).parent if explora else None,
    )
