# internseg: the published InternViT-6B segmentation results (InternVL 1.0 Sec. 4.2.2 and the
# InternVL 2.5 report's Table 15), from weights to the tables.
# `snakemake --profile profiles/default all table15` runs the demo; `--config preset=paper`
# the paper.
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.20")


# Snakemake's own message for a broken config file names neither file nor line.
try:
    with open("config.yaml") as _f:
        yaml.safe_load(_f)
except yaml.YAMLError as err:
    _at = getattr(err, "problem_mark", None)
    _opened = getattr(err, "context_mark", None)
    _where = f"config.yaml:{_at.line + 1}:{_at.column + 1}" if _at else "config.yaml"
    _context = f" ({err.context} at line {_opened.line + 1})" if _opened else ""
    raise WorkflowError(f"{_where}: {getattr(err, 'problem', err)}{_context}") from None


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


if config["preset"] == "demo":

    include: "workflow/rules/demo.smk"


rule all:
    default_target: True
    input:
        RESULTS,


onsuccess:
    print(f"Results in {OUT}/; training curves: tensorboard --logdir work/{PRESET}")
