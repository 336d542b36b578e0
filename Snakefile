# internseg: InternViT-6B on ADE20K (InternVL 1.0, Sec. 4.2.2), from weights to the table.
# `snakemake --profile profiles/default all` runs the demo; `--config preset=paper` the paper.
from snakemake.utils import min_version, validate

min_version("9.20")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/splits.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/released.smk"
include: "workflow/rules/results.smk"


rule all:
    default_target: True
    input:
        RESULTS,
