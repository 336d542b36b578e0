# Stage 2: each dataset checked, safely extracted (and converted), validated; its manifest
# marks it done and is what every later step trusts.


# The demo makes its files (demo.smk); any other preset brings them or downloads them. A file
# that is missing is refused here, when the workflow is parsed, in one line that says where it
# goes or which setting downloads it, not as a missing input deep in the DAG.
if PRESET != "demo":
    ROW_DATASETS = {run.dataset for run in ROW_RUNS.values()}
    MISSING = missing_data(
        PRESET,
        SETTINGS,
        {run.dataset for run in RUN_OF.values()},
        {run.dataset for run in GRID_RUNS.values()} - ROW_DATASETS,
    )
    if MISSING:
        raise WorkflowError(MISSING)


# One rule per registered dataset, prepare_<dataset>, as its entry and config.yaml's
# presets.<preset>.data.<dataset> block say (internseg.preparation: one lifecycle for all).
for NAME, DATASET in DATASETS.items():
    GIVEN = DATA_SETTINGS[NAME]

    rule:
        name:
            f"prepare_{NAME}"
        input:
            preparation_inputs(DATASET, GIVEN),
        output:
            manifest(NAME),
        log:
            f"{RES}/logs/prepare_{NAME}.log",
        localrule: True
        conda:
            ENV
        # a local job (the login node): as many workers as an evaluation job's threads
        threads: SETTINGS["evaluate"]["threads"]
        params:
            # from the input (snakemake --lint: a hardcoded prefix of it fails without a
            # shared file system)
            sources=lambda wildcards, input: source_argument(input),
            data_root=lambda wildcards, output: os.path.dirname(output[0]),
            options=shlex.join(prepare_args(DATASET, GIVEN)),
        shell:
            "internseg prepare {params.options} --source {params.sources}"
            " --data-root {params.data_root} --manifest {output} --workers {threads}"
            " > {log} 2>&1"

    # With `download`, each missing file is a job of its own, so that the preparation stays
    # the same job with or without it. Its output is a receipt beside the file, not the file
    # (preparation.download_receipt): a file already there is never touched, also when the
    # job runs again.
    if GIVEN["download"]:

        rule:
            """A file of the dataset fetched (resumable) and checked (size, digest) before it
            is put in place; one already there is kept as it is."""
            name:
                f"download_{NAME}"
            output:
                download_receipt(f"{GIVEN['sources']}/{{file}}"),
            log:
                f"{RES}/logs/download_{NAME}/{{file}}.log",
            wildcard_constraints:
                file="|".join(re.escape(s.name) for s in DATASET.sources),
            localrule: True
            conda:
                ENV
            params:
                options=shlex.join(download_args(DATASET, GIVEN)),
                file=lambda wildcards, output: downloaded_file(output[0]),
            shell:
                "internseg download {params.options} --out {params.file} > {log} 2>&1"
                " && touch {output}"
