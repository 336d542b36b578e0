# Stage 5: slide inference on the validation set; mIoU, mAcc, aAcc and per-class IoU.


rule evaluate:
    input:
        checkpoint=f"{RUNS}/{{run}}/final.pth",
        config=f"{RUNS}/{{run}}/config.py",
        weights=trunk_weights,
        manifest=MANIFEST,
    output:
        f"{RUNS}/{{run}}/metrics.json",
    log:
        f"{RUNS}/{{run}}/evaluate.log",
    conda:
        ENV
    threads: lookup(dpath=f"presets/{PRESET}/evaluate/threads", within=config)
    resources:
        mem_mb=lookup(dpath=f"presets/{PRESET}/evaluate/mem_mb", within=config),
        gpu=lookup(dpath=f"presets/{PRESET}/evaluate/gpus", within=config),
    params:
        data_root=DATA_ROOT,
        work_dir=f"work/{PRESET}/{{run}}/test",
    shell:
        "internseg test {input.config} {input.checkpoint} --out {output}"
        " --data-root {params.data_root} --pretrained {input.weights}"
        " --work-dir {params.work_dir} --threads {threads} > {log} 2>&1"
