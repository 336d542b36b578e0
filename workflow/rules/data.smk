# Stage 2: ADE20K checked (SHA-1), safely extracted, validated; the manifest marks it done.


localrules:
    prepare_ade20k,


rule prepare_ade20k:
    input:
        SETTINGS["ade20k"]["archive"],
    output:
        MANIFEST,
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
