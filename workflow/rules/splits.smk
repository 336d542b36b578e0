# Stage 3: the training images each run uses, as seeded, checksummed split files.


localrules:
    split,


rule split:
    input:
        unpack(split_inputs),
    output:
        split=f"{RUNS_DIR}/{{run}}/split.txt",
        checksum=f"{RUNS_DIR}/{{run}}/split.txt.sha256",
        record=f"{RUNS_DIR}/{{run}}/split.json",
    log:
        f"{RUNS_DIR}/{{run}}/split.log",
    conda:
        ENV
    params:
        fraction=lambda wildcards: EXPERIMENTS[run_of(wildcards).experiment].fraction,
        seed=seed_option,
    shell:
        "internseg split --manifest {input.manifest} --fraction {params.fraction}"
        " {params.seed} --out {output.split} --record {output.record} > {log} 2>&1"
