# The original's released segmentation checkpoints, fetched at the pinned revision and
# evaluated with the same `internseg test` as our runs: a check of key mapping, inference
# geometry, pins and metric against the paper that needs no training. On with
# `presets.<preset>.evaluate_released` (the table gets released_mIoU); `released_metrics`
# is the target on its own.

STEM_OF = {e: config["experiments"][e]["hub_stem"] for e in config["experiments"]}
EXPERIMENT_OF = {stem: e for e, stem in STEM_OF.items()}
RELEASED_METRICS = "results/released/{experiment}/metrics.json"

# What the table reads: experiment -> metrics.json of its released checkpoint.
RELEASED = (
    {e: RELEASED_METRICS.format(experiment=e) for e in RUN}
    if SETTINGS["evaluate_released"]
    else {}
)


if PRESET == "demo":

    localrules:
        make_demo_released,

    rule make_demo_released:
        """Demo stand-in for a released checkpoint, in the original's key layout."""
        input:
            f"{SETTINGS['weights_local_dir']}/intern_vit_6b_224px.pth",
        output:
            f"{SETTINGS['weights_local_dir']}/{{stem}}.pth",
        log:
            f"{RES}/logs/make_demo_released/{{stem}}.log",
        wildcard_constraints:
            stem="|".join(STEM_OF.values()),
        conda:
            ENV
        params:
            experiment=lambda wildcards: EXPERIMENT_OF[wildcards.stem],
        shell:
            "internseg make-demo-released {params.experiment} --pretrained {input}"
            " --out {output} > {log} 2>&1"


rule evaluate_released:
    input:
        # head-only files take the trunk from the pretrained file (--pretrained)
        checkpoint=lambda wildcards: f"{RES}/published/{STEM_OF[wildcards.experiment]}.pth",
        weights=WEIGHTS,
        manifest=MANIFEST,
    output:
        RELEASED_METRICS,
    log:
        "results/released/{experiment}/evaluate.log",
    conda:
        ENV
    threads: SETTINGS["evaluate"]["threads"]
    resources:
        mem_mb=SETTINGS["evaluate"]["mem_mb"],
        gpu=SETTINGS["evaluate"]["gpus"],
    params:
        config=experiment_config,
        data_root=DATA_ROOT,
        work_dir=f"work/{PRESET}/released/{{experiment}}",
    shell:
        "internseg test {params.config} {input.checkpoint} --out {output}"
        " --data-root {params.data_root} --pretrained {input.weights}"
        " --work-dir {params.work_dir} --threads {threads} > {log} 2>&1"


rule released_metrics:
    """Target: the released checkpoints of the experiments in `run`, evaluated."""
    input:
        expand(RELEASED_METRICS, experiment=RUN),
