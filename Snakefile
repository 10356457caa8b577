# streetvision: train, calibrate and export roadwork classifiers for NATIX StreetVision.
# Only wiring lives here; every computation is in src/streetvision (see docs/architecture.md).
import os

from snakemake.utils import min_version

min_version("9.0")

# The embedded demo is the default config, used only when no --configfile is given: a config file
# means that file (plus the schema's defaults), never the demo underneath it (rules/common.smk).
DEMO_CONFIGFILE = os.path.join(workflow.basedir, "config", "config.yaml")


if not workflow.overwrite_configfiles:

    configfile: DEMO_CONFIGFILE


include: "rules/common.smk"
include: "rules/ingest.smk"
include: "rules/synthesize.smk"
include: "rules/data.smk"
include: "rules/explora.smk"
include: "rules/baseline.smk"
include: "rules/thresholds.smk"
include: "rules/gate.smk"
include: "rules/scrc.smk"
include: "rules/bundle.smk"
include: "rules/hf_export.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
