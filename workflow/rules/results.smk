# Stage 6: one table (ours beside the paper) and the figures, also for `snakemake --report`.


localrules:
    aggregate,
    plan,


rule aggregate:
    input:
        runs=expand(
            "{runs}/{run}/{name}",
            runs=RUNS,
            run=RUNS_PLANNED,
            name=[
                "metrics.json",
                "split.json",
                "config.py",
                "scalars.jsonl",
                "provenance.json",
            ],
        ),
        published=[published_log(RUNS_PLANNED[r].experiment) for r in PUBLISHED],
        released=list(RELEASED.values()),
    output:
        csv=report(
            "results/table.csv", caption="../report/table.rst", category="Results"
        ),
        summary=report(
            "results/summary.csv",
            caption="../report/summary.rst",
            category="Results",
        ),
        markdown="results/table.md",
        provenance=report(
            "results/provenance.csv",
            caption="../report/provenance.rst",
            category="Provenance",
        ),
        fraction_plot=report(
            "results/miou_vs_fraction.png",
            caption="../report/miou_vs_fraction.rst",
            category="Results",
        ),
        trunk_plot=report(
            "results/trunk_regimes.png",
            caption="../report/trunk_regimes.rst",
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
        runs=expand("{runs}/{run}", runs=RUNS, run=RUNS_PLANNED),
        published=[
            f"{r}={published_log(RUNS_PLANNED[r].experiment)}" for r in PUBLISHED
        ],
        released=[f"{r}={path}" for r, path in RELEASED.items()],
        tolerance=(
            f"--tolerance {config['tolerance']}"
            if config.get("tolerance") is not None
            else ""
        ),
    shell:
        f"internseg aggregate {{params.runs}} --runs-root {RUNS}"
        " --published-log {params.published} --released-metrics {params.released}"
        " {params.tolerance} --csv {output.csv} --summary-csv {output.summary}"
        " --markdown {output.markdown} --provenance-csv {output.provenance}"
        " --fraction-plot {output.fraction_plot}"
        " --trunk-plot {output.trunk_plot} --curves-plot {output.curves_plot} > {log} 2>&1"


rule plan:
    """Target: what the chosen preset's runs will cost (GPU-hours, memory, disk), printed
    and written before anything is submitted: `snakemake plan --config preset=paper`."""
    output:
        report("results/plan.md", caption="../report/plan.rst", category="Plan"),
    log:
        "results/plan.log",
    conda:
        ENV
    params:
        preset=PRESET,
        experiments=RUN,
        trunks=(
            "--trunks " + " ".join(SETTINGS["trunks"])
            if SETTINGS.get("trunks")
            else ""
        ),
        seeds=(
            "--train-seeds " + " ".join(map(str, SETTINGS["train_seeds"]))
            if SETTINGS.get("train_seeds")
            else ""
        ),
        gpus=max(SETTINGS["train"]["gpus"], 1),
        published=[
            f"{e}={published_log(e)}"
            for e in LOGGED
            if os.path.exists(published_log(e))
        ],
    shell:
        "internseg plan --preset {params.preset} --experiments {params.experiments}"
        " {params.trunks} {params.seeds} --gpus {params.gpus} --published-log {params.published} --out {output} 2> {log}"
