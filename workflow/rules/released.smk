# The original's released segmentation checkpoints, fetched at the pinned revision and
# evaluated with the same `internseg test` as our runs: a check of key mapping, inference
# geometry, pins and metric against the paper that needs no training. On with
# `presets.<preset>.evaluate_released` (the table gets released_mIoU); `released_metrics`
# is the target on its own.
RELEASED_METRICS = f"{OUT}/released/{{dataset}}/{{trunk}}/{{experiment}}/metrics.json"
# The cells whose record has a released checkpoint, by (dataset, trunk, experiment); the
# file each is evaluated from.
RELEASED_FILE = {
    (run.dataset, run.trunk, run.experiment): run_record(run).released_checkpoint.file
    for run in RUN_OF.values()
    if run_record(run) and run_record(run).released_checkpoint
}
# What the table reads: run -> metrics.json of its cell's released checkpoint.
RELEASED = (
    {
        run_id: RELEASED_METRICS.format(
            dataset=run.dataset, trunk=run.trunk, experiment=run.experiment
        )
        for run_id, run in RUN_OF.items()
        if (run.dataset, run.trunk, run.experiment) in RELEASED_FILE
    }
    if SETTINGS["evaluate_released"]
    else {}
)


rule evaluate_released:
    input:
        # head-only files take the trunk from the pretrained file (--pretrained)
        checkpoint=lambda wildcards: (
            f"{RES}/published/"
            f"{RELEASED_FILE[wildcards.dataset, wildcards.trunk, wildcards.experiment]}"
        ),
        weights=lambda wildcards: weights_of(wildcards.trunk),
        manifest=lambda wildcards: manifest(wildcards.dataset),
    output:
        RELEASED_METRICS,
    log:
        f"{OUT}/released/{{dataset}}/{{trunk}}/{{experiment}}/evaluate.log",
    conda:
        ENV
    threads: lookup(dpath=f"presets/{PRESET}/evaluate/threads", within=config)
    resources:
        mem_mb=lookup(dpath=f"presets/{PRESET}/evaluate/mem_mb", within=config),
        gpu=lookup(dpath=f"presets/{PRESET}/evaluate/gpus", within=config),
    params:
        config=lambda wildcards: f"{PRESET}/{wildcards.experiment}",
        data_root=lambda wildcards: data_tree(wildcards.dataset),
        work_dir=f"work/{PRESET}/released/{{dataset}}/{{trunk}}/{{experiment}}",
    shell:
        "internseg test {params.config} {input.checkpoint} --trunk {wildcards.trunk}"
        " --dataset {wildcards.dataset} --out {output} --data-root {params.data_root}"
        " --pretrained {input.weights} --work-dir {params.work_dir} --threads {threads}"
        " > {log} 2>&1"


rule released_metrics:
    """Target: the released checkpoints of the runs' records, evaluated."""
    input:
        [
            RELEASED_METRICS.format(dataset=d, trunk=t, experiment=e)
            for d, t, e in RELEASED_FILE
        ],
