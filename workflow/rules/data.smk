# Stage 2: each dataset checked, safely extracted (and converted), validated; its manifest
# marks it done and is what every later step trusts.


localrules:
    prepare_coco_stuff,


# The demo makes its zips (demo.smk); any other preset brings them or downloads them. A zip
# that is missing is refused here, when the workflow is parsed, in one line that says where it
# goes or which setting downloads it, not as a missing input deep in the DAG.
if PRESET != "demo":
    MISSING = missing_data(PRESET, SETTINGS, {run.dataset for run in RUN_OF.values()})
    if MISSING:
        raise WorkflowError(MISSING)


# One rule per registered dataset that is extracted as it is (its entry's convert is None),
# named prepare_<dataset>, its settings from config.yaml's block or else from its entry. Its
# command is the text ADE20K's rule always had (extracted_command): a changed one would rerun
# the preparation and every job after it.
for NAME, DATASET in DATASETS.items():
    if DATASET.convert is not None:
        continue
    EXTRACTED = extracted_settings(DATASET, PRESET, SETTINGS)

    rule:
        name:
            f"prepare_{NAME}"
        input:
            EXTRACTED["archive"],
        output:
            manifest(NAME),
        log:
            f"{RES}/logs/prepare_{NAME}.log",
        localrule: True
        conda:
            ENV
        params:
            sha1=f"--sha1 {EXTRACTED['sha1']}" if EXTRACTED["sha1"] else "",
            data_root=lambda wildcards, output: os.path.dirname(output[0]),
            train=EXTRACTED["train_count"],
            val=EXTRACTED["val_count"],
        shell:
            extracted_command("prepare", locals())

    # With `download`, the zip is a rule's output of its own, so that the preparation above
    # stays the same job with or without it (a changed command would rerun it and every job
    # after it).
    if EXTRACTED["download"]:

        rule:
            """The zip fetched (resumable) and checked (size, sha1) before it is put in place."""
            name:
                f"download_{NAME}"
            output:
                EXTRACTED["archive"],
            log:
                f"{RES}/logs/download_{NAME}.log",
            localrule: True
            conda:
                ENV
            params:
                options=shlex.join(download_args(EXTRACTED)),
            shell:
                extracted_command("download", locals())


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
