# Stage 3: the training images each experiment uses, as seeded, checksummed split files.


localrules:
    split,


rule split:
    input:
        unpack(split_inputs),
    output:
        split=f"{RUNS}/{{run}}/split.txt",
        checksum=f"{RUNS}/{{run}}/split.txt.sha256",
        record=f"{RUNS}/{{run}}/split.json",
    log:
        f"{RUNS}/{{run}}/split.log",
    conda:
        ENV
    params:
        fraction=lambda wildcards: EXPERIMENTS[experiment_of(wildcards)].fraction,
        seed=seed_option,
    shell:
        "internseg split --manifest {input.manifest} --fraction {params.fraction}"
        " {params.seed} --out {output.split} --record {output.record} > {log} 2>&1"
