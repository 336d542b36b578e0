# The original's released segmentation checkpoints, fetched at the pinned revision and
# evaluated with the same `internseg test` as our runs: a check of key mapping, inference
# geometry, pins and metric against the paper that needs no training. On with
# `presets.<preset>.evaluate_released` (the table gets released_mIoU); `released_metrics`
# is the target on its own.

RELEASED_FILE = {
    name: exp.released_checkpoint.file
    for name, exp in EXPERIMENTS.items()
    if exp.released_checkpoint
}
EXPERIMENT_OF = {file: name for name, file in RELEASED_FILE.items()}
RELEASED_METRICS = "results/released/{experiment}/metrics.json"
# What the table reads: run -> metrics.json of its experiment's released checkpoint, for
# the runs that start from the trunk the checkpoint was trained from.
RELEASED = (
    {
        run_id: RELEASED_METRICS.format(experiment=run.experiment)
        for run_id, run in RUNS_PLANNED.items()
        if run.experiment in RELEASED_FILE and own_trunk(run)
    }
    if SETTINGS["evaluate_released"]
    else {}
)

if PRESET == "demo":

    localrules:
        make_demo_released,

    rule make_demo_released:
        """Demo stand-in for a released checkpoint, in the original's key layout."""
        input:
            # the fetched trunk, not its source in weights_local_dir: fetch_weights hard-links
            # the two and Snakemake then touches its output, so the source's mtime moves too
            lambda wildcards: (
                f"{RES}/weights/"
                f"{EXPERIMENTS[EXPERIMENT_OF[wildcards.released_file]].trunk.file}"
            ),
        output:
            f"{SETTINGS['weights_local_dir']}/{{released_file}}",
        log:
            f"{RES}/logs/make_demo_released/{{released_file}}.log",
        wildcard_constraints:
            released_file="|".join(map(re.escape, EXPERIMENT_OF)),
        conda:
            ENV
        params:
            experiment=lambda wildcards: EXPERIMENT_OF[wildcards.released_file],
        shell:
            "internseg make-demo-released {params.experiment} --pretrained {input}"
            " --out {output} > {log} 2>&1"


rule evaluate_released:
    input:
        # head-only files take the trunk from the pretrained file (--pretrained)
        checkpoint=lambda wildcards: f"{RES}/published/{RELEASED_FILE[wildcards.experiment]}",
        weights=trunk_weights,
        manifest=MANIFEST,
    output:
        RELEASED_METRICS,
    log:
        "results/released/{experiment}/evaluate.log",
    conda:
        ENV
    threads: lookup(dpath=f"presets/{PRESET}/evaluate/threads", within=config)
    resources:
        mem_mb=lookup(dpath=f"presets/{PRESET}/evaluate/mem_mb", within=config),
        gpu=lookup(dpath=f"presets/{PRESET}/evaluate/gpus", within=config),
    params:
        config=experiment_config,
        options=cfg_options,
        data_root=DATA_ROOT,
        work_dir=f"work/{PRESET}/released/{{experiment}}",
    shell:
        "internseg test {params.config} {input.checkpoint} --out {output}"
        " --data-root {params.data_root} --pretrained {input.weights}"
        " --work-dir {params.work_dir} --threads {threads} {params.options} > {log} 2>&1"


rule released_metrics:
    """Target: the released checkpoints of the experiments in `run`, evaluated."""
    input:
        expand(RELEASED_METRICS, experiment=[e for e in RUN if e in RELEASED_FILE]),
