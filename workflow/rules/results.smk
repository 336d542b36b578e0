# Stage 6: the tables (ours beside the published numbers) and the figures, also for
# `snakemake --report`: `all` for the rows of `run`, `table15` for the Table 15 grid.


localrules:
    aggregate,
    aggregate_table15,
    plan,


rule aggregate:
    input:
        runs=run_files(ROW_RUNS),
        published=[PUBLISHED[r] for r in ROW_RUNS if r in PUBLISHED],
        released=[RELEASED[r] for r in ROW_RUNS if r in RELEASED],
    output:
        csv=report(
            f"{OUT}/table.csv", caption="../report/table.rst", category="Results"
        ),
        summary=report(
            f"{OUT}/summary.csv", caption="../report/summary.rst", category="Results"
        ),
        markdown=f"{OUT}/table.md",
        provenance=report(
            f"{OUT}/provenance.csv",
            caption="../report/provenance.rst",
            category="Provenance",
        ),
        fraction_plot=report(
            f"{OUT}/miou_vs_fraction.png",
            caption="../report/miou_vs_fraction.rst",
            category="Results",
        ),
        trunk_plot=report(
            f"{OUT}/trunk_regimes.png",
            caption="../report/trunk_regimes.rst",
            category="Results",
        ),
        curves_plot=report(
            f"{OUT}/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
        ),
    log:
        f"{OUT}/aggregate.log",
    conda:
        ENV
    params:
        **aggregate_params(ROW_RUNS),
        tolerance=TOLERANCE,
    shell:
        f"internseg aggregate {{params.runs}} --runs-root {RUNS_DIR}"
        " --published-log {params.published} --released-metrics {params.released}"
        " {params.tolerance} --csv {output.csv} --summary-csv {output.summary}"
        " --markdown {output.markdown} --provenance-csv {output.provenance}"
        " --fraction-plot {output.fraction_plot}"
        " --trunk-plot {output.trunk_plot} --curves-plot {output.curves_plot} > {log} 2>&1"


rule aggregate_table15:
    input:
        runs=run_files(GRID_RUNS),
        published=[PUBLISHED[r] for r in GRID_RUNS if r in PUBLISHED],
        released=[RELEASED[r] for r in GRID_RUNS if r in RELEASED],
    output:
        markdown=report(
            f"{OUT}/table15.md", caption="../report/table15.rst", category="Table 15"
        ),
        csv=report(
            f"{OUT}/table15.csv", caption="../report/table15.rst", category="Table 15"
        ),
        plot=report(
            f"{OUT}/table15.png",
            caption="../report/table15_plot.rst",
            category="Table 15",
        ),
    log:
        f"{OUT}/aggregate_table15.log",
    conda:
        ENV
    params:
        **aggregate_params(GRID_RUNS),
        tolerance=TOLERANCE,
    shell:
        f"internseg aggregate {{params.runs}} --runs-root {RUNS_DIR}"
        " --published-log {params.published} --released-metrics {params.released}"
        " {params.tolerance} --table15-markdown {output.markdown}"
        " --table15-csv {output.csv} --table15-plot {output.plot} > {log} 2>&1"


rule table15:
    """Target: the InternVL 2.5 report's Table 15 grid on the preset's `table15` trunks and
    datasets: `snakemake table15 --config preset=paper` (what it costs: results/<preset>/plan.md).
    """
    input:
        TABLE15,


rule plan:
    """Target: what the preset's runs (`all` and `table15`) will cost (GPU-hours, memory,
    disk), printed and written before anything is submitted: `snakemake plan --config
    preset=paper`."""
    output:
        report(f"{OUT}/plan.md", caption="../report/plan.rst", category="Plan"),
    log:
        f"{OUT}/plan.log",
    conda:
        ENV
    params:
        preset=PRESET,
        runs=list(RUN_OF),
        gpus=max(SETTINGS["train"]["gpus"], 1),
        gpu_memory_gb=config["gpu_memory_gb"],
        published=[
            f"{e}={seed_log(e)}"
            for e in dict.fromkeys(run.experiment for run in RUN_OF.values())
            if seed_of(e) == "log" and os.path.exists(seed_log(e))
        ],
    shell:
        "internseg plan --preset {params.preset} --runs {params.runs} --gpus {params.gpus}"
        " --gpu-memory-gb {params.gpu_memory_gb} --published-log {params.published} --out {output} 2> {log}"
