# Stage 1: the pretrained trunks (and published logs/checkpoints) from the Hub, verified.
# Local rules: they need the network, which compute nodes often lack.


localrules:
    fetch_weights,
    fetch_log,
    fetch_released,
    released_checkpoints,


TRUNK_FILES = [t.file for t in TRUNKS.values()]
SYNTHETIC = {t.file: t.name for t in TRUNKS.values() if t.synthetic}

if PRESET == "demo":

    rule make_demo:
        """The synthetic ADEChallengeData2016.zip."""
        output:
            archive=SETTINGS["ade20k"]["archive"],
        log:
            f"{RES}/logs/make_demo.log",
        conda:
            ENV
        params:
            train=SETTINGS["ade20k"]["train_count"],
            val=SETTINGS["ade20k"]["val_count"],
        shell:
            "internseg make-demo --zip {output.archive}"
            " --train-count {params.train} --val-count {params.val} > {log} 2>&1"

    rule make_demo_trunk:
        """A synthetic registered trunk, saved like the released pretrained file."""
        output:
            f"{SETTINGS['weights_local_dir']}/{{trunk_file}}",
        log:
            f"{RES}/logs/make_demo_trunk/{{trunk_file}}.log",
        wildcard_constraints:
            trunk_file="|".join(map(re.escape, SYNTHETIC)),
        conda:
            ENV
        params:
            trunk=lambda wildcards: SYNTHETIC[wildcards.trunk_file],
        shell:
            "internseg make-demo --trunk {params.trunk} --checkpoint {output} > {log} 2>&1"


rule fetch_weights:
    input:
        # the demo's trunks come from weights_local_dir, written by make_demo_trunk
        lambda wildcards: (
            f"{SETTINGS['weights_local_dir']}/{wildcards.trunk_file}"
            if PRESET == "demo"
            else []
        ),
    output:
        f"{RES}/weights/{{trunk_file}}",
    log:
        f"{RES}/logs/fetch_weights/{{trunk_file}}.log",
    wildcard_constraints:
        trunk_file="|".join(map(re.escape, TRUNK_FILES)),
    conda:
        ENV
    params:
        pin=lambda wildcards: hub_pin(wildcards.trunk_file),
    shell:
        "internseg fetch {wildcards.trunk_file} --out {output} {params.pin} > {log} 2>&1"


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
        [
            f"{RES}/published/{EXPERIMENTS[e].released_checkpoint.file}"
            for e in RUN
            if EXPERIMENTS[e].released_checkpoint
        ],
