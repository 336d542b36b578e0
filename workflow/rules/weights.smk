# Stage 1: the pretrained trunk (and published logs/checkpoints) from the Hub, verified.
# Local rules: they need the network, which compute nodes often lack.


localrules:
    fetch_weights,
    fetch_log,
    fetch_released,
    released_checkpoints,


if PRESET == "demo":

    rule make_demo:
        output:
            archive=SETTINGS["ade20k"]["archive"],
            checkpoint=f"{SETTINGS['weights_local_dir']}/intern_vit_6b_224px.pth",
        log:
            f"{RES}/logs/make_demo.log",
        conda:
            ENV
        params:
            train=SETTINGS["ade20k"]["train_count"],
            val=SETTINGS["ade20k"]["val_count"],
        shell:
            "internseg make-demo --zip {output.archive} --checkpoint {output.checkpoint}"
            " --train-count {params.train} --val-count {params.val} > {log} 2>&1"


rule fetch_weights:
    input:
        rules.make_demo.output.checkpoint if PRESET == "demo" else [],
    output:
        WEIGHTS,
    log:
        f"{RES}/logs/fetch_weights.log",
    conda:
        ENV
    params:
        pin=hub_pin("intern_vit_6b_224px.pth"),
    shell:
        "internseg fetch intern_vit_6b_224px.pth --out {output} {params.pin} > {log} 2>&1"


rule fetch_log:
    output:
        f"{RES}/published/{{stem}}.log",
    log:
        f"{RES}/logs/fetch/{{stem}}.log",
    conda:
        ENV
    params:
        pin=lambda wildcards: hub_pin(f"{wildcards.stem}.log"),
    shell:
        "internseg fetch {wildcards.stem}.log --out {output} {params.pin} > {log} 2>&1"


rule fetch_released:
    input:
        # the demo's stand-ins (released.smk), taken from weights_local_dir like its trunk
        lambda wildcards: (
            f"{SETTINGS['weights_local_dir']}/{wildcards.stem}.pth"
            if PRESET == "demo"
            else []
        ),
    output:
        f"{RES}/published/{{stem}}.pth",
    log:
        f"{RES}/logs/fetch/{{stem}}.pth.log",
    conda:
        ENV
    params:
        pin=lambda wildcards: hub_pin(f"{wildcards.stem}.pth"),
    shell:
        "internseg fetch {wildcards.stem}.pth --out {output} {params.pin} > {log} 2>&1"


rule released_checkpoints:
    """Target: the released segmentation checkpoints of the experiments in `run`."""
    input:
        expand(
            "{res}/published/{stem}.pth",
            res=RES,
            stem=[config["experiments"][e]["hub_stem"] for e in RUN],
        ),
