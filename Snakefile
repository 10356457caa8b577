# streetvision: train, calibrate and export roadwork classifiers for NATIX StreetVision.
# Only wiring lives here; every computation is in src/streetvision (see DESIGN.md).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/explora.smk"
include: "rules/baseline.smk"
include: "rules/thresholds.smk"
include: "rules/gate.smk"
include: "rules/calibration.smk"
include: "rules/export.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
