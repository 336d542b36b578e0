# Stage 2: each dataset checked, safely extracted (and converted), validated; its manifest
# marks it done and is what every later step trusts.


localrules:
    prepare_ade20k,


rule prepare_ade20k:
    input:
        SETTINGS["ade20k"]["archive"],
    output:
        manifest("ade20k"),
    log:
        f"{RES}/logs/prepare_ade20k.log",
    conda:
        ENV
    params:
        sha1=lambda wildcards: (
            f"--sha1 {SETTINGS['ade20k']['sha1']}"
            if SETTINGS["ade20k"]["sha1"]
            else ""
        ),
        data_root=lambda wildcards, output: os.path.dirname(output[0]),
        train=SETTINGS["ade20k"]["train_count"],
        val=SETTINGS["ade20k"]["val_count"],
    shell:
        "internseg prepare-ade20k --source {input} --data-root {params.data_root}"
        " --manifest {output} --train-count {params.train} --val-count {params.val}"
        " {params.sha1} > {log} 2>&1"
