# Stage 3: the training images each experiment uses, as seeded, checksummed split files.


localrules:
    split,


rule split:
    input:
        unpack(split_inputs),
    output:
        split=f"{RUNS}/{{experiment}}/split.txt",
        checksum=f"{RUNS}/{{experiment}}/split.txt.sha256",
        record=f"{RUNS}/{{experiment}}/split.json",
    log:
        f"{RUNS}/{{experiment}}/split.log",
    conda:
        ENV
    params:
        fraction=lambda wildcards: EXPERIMENTS[wildcards.experiment].fraction,
        seed=seed_option,
    shell:
        "internseg split --manifest {input.manifest} --fraction {params.fraction}"
        " {params.seed} --out {output.split} --record {output.record} > {log} 2>&1"
