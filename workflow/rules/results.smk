# Stage 6: one table (ours beside the paper) and the figures, also for `snakemake --report`.


localrules:
    aggregate,
    plan,


rule aggregate:
    input:
        runs=expand(
            "{runs}/{experiment}/{name}",
            runs=RUNS,
            experiment=RUN,
            name=["metrics.json", "split.json", "config.py", "scalars.jsonl"],
        ),
        published=[published_log(e) for e in LOGGED],
        released=list(RELEASED.values()),
    output:
        csv=report(
            "results/table.csv", caption="../report/table.rst", category="Results"
        ),
        markdown="results/table.md",
        fraction_plot=report(
            "results/miou_vs_fraction.png",
            caption="../report/miou_vs_fraction.rst",
            category="Results",
        ),
        curves_plot=report(
            "results/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
        ),
    log:
        "results/aggregate.log",
    conda:
        ENV
    params:
        runs=expand("{runs}/{experiment}", runs=RUNS, experiment=RUN),
        published=[f"{e}={published_log(e)}" for e in LOGGED],
        released=[f"{e}={path}" for e, path in RELEASED.items()],
    shell:
        "internseg aggregate {params.runs}"
        " --published-log {params.published} --released-metrics {params.released}"
        " --csv {output.csv} --markdown {output.markdown}"
        " --fraction-plot {output.fraction_plot} --curves-plot {output.curves_plot} > {log} 2>&1"


rule plan:
    """Target: what the chosen preset's runs will cost (GPU-hours, memory, disk), printed
    and written before anything is submitted: `snakemake plan --config preset=paper`."""
    output:
        "results/plan.md",
    log:
        "results/plan.log",
    conda:
        ENV
    params:
        preset=PRESET,
        experiments=RUN,
        gpus=max(SETTINGS["train"]["gpus"], 1),
        published=[
            f"{e}={published_log(e)}"
            for e in LOGGED
            if os.path.exists(published_log(e))
        ],
    shell:
        "internseg plan --preset {params.preset} --experiments {params.experiments}"
        " --gpus {params.gpus} --published-log {params.published} --out {output} 2> {log}"
