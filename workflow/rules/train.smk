# Stage 4: training. Checkpoints live in the work dir, which is not an output (Snakemake
# deletes the outputs of failed jobs); --auto-resume picks them up on a retry. The trainer's
# own log, train.log, is not a `log:` either (Snakemake deletes those when a job starts, a
# second job on a running run included): the trainer appends to it once it holds the work
# dir; train.launch.log holds what came before (the launch, a refusal).


rule train:
    input:
        split=f"{RUNS_DIR}/{{run}}/split.txt",
        record=f"{RUNS_DIR}/{{run}}/split.json",
        weights=run_weights,
        manifest=run_manifest,
        # the original's log of the run, where it has one: training is compared with it
        reference=reference_log,
        # the experiment's config and its _base_ chain: an edit retrains what it changes
        configs=run_sources,
    output:
        checkpoint=f"{RUNS_DIR}/{{run}}/final.pth",
        config=f"{RUNS_DIR}/{{run}}/config.py",
        scalars=f"{RUNS_DIR}/{{run}}/scalars.jsonl",
        provenance=f"{RUNS_DIR}/{{run}}/provenance.json",
    log:
        f"{RUNS_DIR}/{{run}}/train.launch.log",
    conda:
        ENV
    threads: lookup(dpath=f"presets/{PRESET}/train/threads", within=config)
    resources:
        mem_mb=lookup(dpath=f"presets/{PRESET}/train/mem_mb", within=config),
        gpu=lookup(dpath=f"presets/{PRESET}/train/gpus", within=config),
    params:
        config=run_config,
        work_dir=f"work/{PRESET}/{{run}}",
        train_log=f"{RUNS_DIR}/{{run}}/train.log",
        data_root=lambda wildcards: data_tree(run_of(wildcards).dataset),
        options=run_options,
        drift=drift_options,
        seed=train_seed_option,
        deterministic=(
            "--deterministic"
            if lookup(dpath=f"presets/{PRESET}/deterministic", within=config)
            else ""
        ),
    shell:
        "internseg train {params.config} {params.options} --work-dir {params.work_dir}"
        " --log-file {params.train_log}"
        " --auto-resume --data-root {params.data_root} --split {input.split}"
        " --seed-record {input.record} {params.seed}"
        " --pretrained {input.weights} {params.deterministic} {params.drift}"
        " --threads {threads}"
        " --gpus {resources.gpu}"
        " --final-checkpoint {output.checkpoint} --config-out {output.config}"
        " --scalars-out {output.scalars} --provenance-out {output.provenance} > {log} 2>&1"
