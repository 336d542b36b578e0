# Stage 4: training. Checkpoints live in the work dir, which is not an output (Snakemake
# deletes the outputs of failed jobs); --auto-resume picks them up on a retry.


rule train:
    input:
        split=f"{RUNS}/{{experiment}}/split.txt",
        record=f"{RUNS}/{{experiment}}/split.json",
        weights=WEIGHTS,
        manifest=MANIFEST,
        # the experiment's config and its _base_ chain: an edit retrains what it changes
        configs=experiment_sources,
    output:
        checkpoint=f"{RUNS}/{{experiment}}/final.pth",
        config=f"{RUNS}/{{experiment}}/config.py",
        scalars=f"{RUNS}/{{experiment}}/scalars.jsonl",
    log:
        f"{RUNS}/{{experiment}}/train.log",
    conda:
        ENV
    threads: SETTINGS["train"]["threads"]
    resources:
        mem_mb=SETTINGS["train"]["mem_mb"],
        gpu=SETTINGS["train"]["gpus"],
    params:
        config=experiment_config,
        work_dir=f"work/{PRESET}/{{experiment}}",
        data_root=DATA_ROOT,
        deterministic="--deterministic" if SETTINGS["deterministic"] else "",
    shell:
        "internseg train {params.config} --work-dir {params.work_dir} --auto-resume"
        " --data-root {params.data_root} --split {input.split} --seed-record {input.record}"
        " --pretrained {input.weights} {params.deterministic} --threads {threads}"
        " --gpus {resources.gpu}"
        " --final-checkpoint {output.checkpoint} --config-out {output.config}"
        " --scalars-out {output.scalars} > {log} 2>&1"
