"""Snakemake adapter for phase 4 (ExPLoRA)."""

from streetvision.logs import log_to_file
from streetvision.train.phase4 import run_explora_phase

with log_to_file(snakemake.log[0]):  # noqa: F821 - injected by Snakemake
    run_explora_phase(
        snakemake.params.cfg,  # noqa: F821
        snakemake.params.data_dir,  # noqa: F821
        snakemake.params.out_dir,  # noqa: F821
        experiment=snakemake.wildcards.exp,  # noqa: F821
        gpus=int(snakemake.resources.gpu),  # noqa: F821
        workflow_dir=snakemake.params.workflow_dir,  # noqa: F821
    )
