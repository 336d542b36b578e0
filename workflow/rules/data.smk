# Stage 2: each dataset checked, safely extracted (and converted), validated; its manifest
# marks it done and is what every later step trusts.


localrules:
    prepare_ade20k,
    prepare_coco_stuff,


# The demo makes its zips (demo.smk); any other preset brings them or downloads them. A zip
# that is missing is refused here, when the workflow is parsed, in one line that says where it
# goes or which setting downloads it, not as a missing input deep in the DAG.
if PRESET != "demo":
    MISSING = missing_data(PRESET, SETTINGS, {run.dataset for run in RUN_OF.values()})
    if MISSING:
        raise WorkflowError(MISSING)


ADE = SETTINGS["ade20k"]


rule prepare_ade20k:
    input:
        # with `download`, a missing zip is fetched by the job itself
        [] if ADE["download"] else ADE["archive"],
    output:
        manifest("ade20k"),
    log:
        f"{RES}/logs/prepare_ade20k.log",
    conda:
        ENV
    params:
        source=lambda wildcards, input: input[0] if input else ADE["archive"],
        data_root=lambda wildcards, output: os.path.dirname(output[0]),
        train=ADE["train_count"],
        val=ADE["val_count"],
        options=shlex.join(ade20k_prepare_args(ADE)),
    shell:
        "internseg prepare-ade20k --source {params.source} --data-root {params.data_root}"
        " --manifest {output} --train-count {params.train} --val-count {params.val}"
        " {params.options} > {log} 2>&1"


COCO = SETTINGS["coco_stuff164k"]


rule prepare_coco_stuff:
    input:
        # with `download`, the zips that are missing are fetched by the job itself
        []
        if COCO["download"]
        else expand("{zips}/{name}", zips=COCO["zips"], name=COCO_STUFF_ZIPS),
    output:
        manifest("coco_stuff164k"),
    log:
        f"{RES}/logs/prepare_coco_stuff.log",
    conda:
        ENV
    # a local job (the login node): as many workers as an evaluation job's threads
    threads: SETTINGS["evaluate"]["threads"]
    params:
        # from the input where there is one (snakemake --lint: a hardcoded prefix of it fails
        # without a shared file system)
        zips=lambda wildcards, input: (
            os.path.dirname(input[0]) if input else COCO["zips"]
        ),
        data_root=lambda wildcards, output: os.path.dirname(output[0]),
        train=COCO["train_count"],
        val=COCO["val_count"],
        options=shlex.join(prepare_args(COCO)),
    shell:
        "internseg prepare-coco-stuff --source {params.zips} --data-root {params.data_root}"
        " --manifest {output} --train-count {params.train} --val-count {params.val}"
        " --workers {threads} {params.options} > {log} 2>&1"
