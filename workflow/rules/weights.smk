# Stage 1: the pretrained trunks (and published logs and released checkpoints) from the Hub,
# verified. Local rules: they need the network, which compute nodes often lack. With
# `weights_local_dir` the files are taken from that folder instead (offline machines, and
# the demo, whose folder demo.smk writes).


localrules:
    fetch_weights,
    fetch_log,
    fetch_released,
    released_checkpoints,


TRUNK_FILES = [t.file for t in TRUNKS.values()]


rule fetch_weights:
    input:
        lambda wildcards: local_source(wildcards.trunk_file),
    output:
        f"{RES}/weights/{{trunk_file}}",
    log:
        f"{RES}/logs/fetch_weights/{{trunk_file}}.log",
    wildcard_constraints:
        trunk_file="|".join(map(re.escape, TRUNK_FILES)),
    conda:
        ENV
    params:
        options=lambda wildcards: fetch_options(wildcards.trunk_file),
    shell:
        "internseg fetch {wildcards.trunk_file} --out {output} {params.options} > {log} 2>&1"


rule fetch_log:
    output:
        f"{RES}/published/{{stem}}.log",
    log:
        f"{RES}/logs/fetch/{{stem}}.log",
    conda:
        ENV
    params:
        options=lambda wildcards: fetch_options(f"{wildcards.stem}.log"),
    shell:
        "internseg fetch {wildcards.stem}.log --out {output} {params.options} > {log} 2>&1"


rule fetch_released:
    input:
        lambda wildcards: local_source(f"{wildcards.stem}.pth"),
    output:
        f"{RES}/published/{{stem}}.pth",
    log:
        f"{RES}/logs/fetch/{{stem}}.pth.log",
    conda:
        ENV
    params:
        options=lambda wildcards: fetch_options(f"{wildcards.stem}.pth"),
    shell:
        "internseg fetch {wildcards.stem}.pth --out {output} {params.options} > {log} 2>&1"


rule released_checkpoints:
    """Target: the released segmentation checkpoints of the runs' records."""
    input:
        sorted(
            {
                f"{RES}/published/{run_record(run).released_checkpoint.file}"
                for run in RUN_OF.values()
                if run_record(run) and run_record(run).released_checkpoint
            }
        ),
