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


rule prepare_ade20k:
    input:
        SETTINGS["ade20k"]["archive"],
    output:
        manifest("ade20k"),
    log:
        f"{RES}/logs/prepare_ade20k.log",
    conda:
        ENV
    params:
        sha1=lambda wildcards: (
            f"--sha1 {SETTINGS['ade20k']['sha1']}"
            if SETTINGS["ade20k"]["sha1"]
            else ""
        ),
        data_root=lambda wildcards, output: os.path.dirname(output[0]),
        train=SETTINGS["ade20k"]["train_count"],
        val=SETTINGS["ade20k"]["val_count"],
    shell:
        "internseg prepare-ade20k --source {input} --data-root {params.data_root}"
        " --manifest {output} --train-count {params.train} --val-count {params.val}"
        " {params.sha1} > {log} 2>&1"


# With `download`, the zip is a rule's output of its own, so that the preparation above stays
# the same job with or without it (a changed command would rerun it and every job after it).
if SETTINGS["ade20k"]["download"]:

    localrules:
        download_ade20k,

    rule download_ade20k:
        """The zip fetched (resumable) and checked (size, sha1) before it is put in place."""
        output:
            SETTINGS["ade20k"]["archive"],
        log:
            f"{RES}/logs/download_ade20k.log",
        conda:
            ENV
        params:
            options=shlex.join(download_args(SETTINGS["ade20k"])),
        shell:
            "internseg download-ade20k --out {output} {params.options} > {log} 2>&1"


COCO = SETTINGS["coco_stuff164k"]
# at parse, named by its config keys: in the job it would name the options built from them
try:
    COCO_OPTIONS = shlex.join(prepare_args(COCO))
except InputError as err:
    raise WorkflowError(
        f"config.yaml: presets.{PRESET}.coco_stuff164k: {err}"
    ) from None


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
        options=COCO_OPTIONS,
    shell:
        "internseg prepare-coco-stuff --source {params.zips} --data-root {params.data_root}"
        " --manifest {output} --train-count {params.train} --val-count {params.val}"
        " --workers {threads} {params.options} > {log} 2>&1"
