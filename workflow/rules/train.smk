# Stage 4: training. Checkpoints live in the work dir, which is not an output (Snakemake
# deletes the outputs of failed jobs); --auto-resume picks them up on a retry.


rule train:
    input:
        split=f"{RUNS}/{{run}}/split.txt",
        record=f"{RUNS}/{{run}}/split.json",
        weights=trunk_weights,
        manifest=MANIFEST,
        # the experiment's config and its _base_ chain: an edit retrains what it changes
        configs=experiment_sources,
    output:
        checkpoint=f"{RUNS}/{{run}}/final.pth",
        config=f"{RUNS}/{{run}}/config.py",
        scalars=f"{RUNS}/{{run}}/scalars.jsonl",
        provenance=f"{RUNS}/{{run}}/provenance.json",
    log:
        f"{RUNS}/{{run}}/train.log",
    conda:
        ENV
    threads: lookup(dpath=f"presets/{PRESET}/train/threads", within=config)
    resources:
        mem_mb=lookup(dpath=f"presets/{PRESET}/train/mem_mb", within=config),
        gpu=lookup(dpath=f"presets/{PRESET}/train/gpus", within=config),
    params:
        config=experiment_config,
        work_dir=f"work/{PRESET}/{{run}}",
        data_root=DATA_ROOT,
        options=cfg_options,
        seed=train_seed_option,
        deterministic=(
            "--deterministic"
            if lookup(dpath=f"presets/{PRESET}/deterministic", within=config)
            else ""
        ),
    shell:
        "internseg train {params.config} --work-dir {params.work_dir} --auto-resume"
        " --data-root {params.data_root} --split {input.split} --seed-record {input.record}"
        " {params.seed}"
        " --pretrained {input.weights} {params.deterministic} --threads {threads}"
        " {params.options}"
        " --gpus {resources.gpu}"
        " --final-checkpoint {output.checkpoint} --config-out {output.config}"
        " --scalars-out {output.scalars} --provenance-out {output.provenance} > {log} 2>&1"
