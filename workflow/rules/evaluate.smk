# Stage 5: slide inference on the validation set; mIoU, mAcc, aAcc and per-class IoU.


rule evaluate:
    input:
        checkpoint=f"{RUNS}/{{experiment}}/final.pth",
        config=f"{RUNS}/{{experiment}}/config.py",
        weights=WEIGHTS,
        manifest=MANIFEST,
    output:
        f"{RUNS}/{{experiment}}/metrics.json",
    log:
        f"{RUNS}/{{experiment}}/evaluate.log",
    conda:
        ENV
    threads: SETTINGS["evaluate"]["threads"]
    resources:
        mem_mb=SETTINGS["evaluate"]["mem_mb"],
        gpu=SETTINGS["evaluate"]["gpus"],
    params:
        data_root=DATA_ROOT,
        work_dir=f"work/{PRESET}/{{experiment}}/test",
    shell:
        "internseg test {input.config} {input.checkpoint} --out {output}"
        " --data-root {params.data_root} --pretrained {input.weights}"
        " --work-dir {params.work_dir} --threads {threads} > {log} 2>&1"
