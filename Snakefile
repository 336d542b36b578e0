# internseg: the published InternViT-6B segmentation results (InternVL 1.0 Sec. 4.2.2 and the
# InternVL 2.5 report's Table 15), from weights to the tables.
# `snakemake --profile profiles/default all table15` runs the demo; `--config preset=paper`
# the paper.
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from internseg.errors import InputError
from internseg.io import read_yaml
from internseg.schema import check_config

min_version("9.20")


# Snakemake's own message for a broken config file names neither file nor line, and its
# YAML loader keeps the last of two equal keys silently: read it first with ours.
try:
    read_yaml("config.yaml", "workflow config")
except InputError as err:
    raise WorkflowError(str(err)) from None


configfile: "config.yaml"


# One line for a config that does not fit the schema (Snakemake's `validate` prints the whole
# schema); `validate` then fills in the schema's defaults.
try:
    check_config(config, "workflow/schemas/config.schema.yaml")
except InputError as err:
    raise WorkflowError(str(err)) from None
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/splits.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/released.smk"
include: "workflow/rules/results.smk"


if config["preset"] == "demo":

    include: "workflow/rules/demo.smk"


rule all:
    default_target: True
    input:
        RESULTS,


onsuccess:
    print(f"Results in {OUT}/; training curves: tensorboard --logdir work/{PRESET}")
