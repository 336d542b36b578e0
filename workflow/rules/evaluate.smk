# Stage 5: slide inference on the validation set; mIoU, mAcc, aAcc and per-class IoU.


rule evaluate:
    input:
        checkpoint=f"{RUNS_DIR}/{{run}}/final.pth",
        config=f"{RUNS_DIR}/{{run}}/config.py",
        weights=run_weights,
        manifest=run_manifest,
    output:
        f"{RUNS_DIR}/{{run}}/metrics.json",
    log:
        f"{RUNS_DIR}/{{run}}/evaluate.log",
    conda:
        ENV
    threads: lookup(dpath=f"presets/{PRESET}/evaluate/threads", within=config)
    resources:
        mem_mb=lookup(dpath=f"presets/{PRESET}/evaluate/mem_mb", within=config),
        gpu=lookup(dpath=f"presets/{PRESET}/evaluate/gpus", within=config),
    params:
        data_root=lambda wildcards: data_tree(run_of(wildcards).dataset),
        work_dir=f"work/{PRESET}/{{run}}/test",
    shell:
        "internseg test {input.config} {input.checkpoint} --out {output}"
        " --data-root {params.data_root} --pretrained {input.weights}"
        " --work-dir {params.work_dir} --threads {threads} > {log} 2>&1"
