# Names and paths shared by the rules. No experiment logic lives here: the `internseg` CLI
# does the work, the rules only say what goes in and out. Which experiments, trunks,
# datasets and published numbers exist comes from the registries (internseg.registry,
# internseg.trunks, internseg.datasets, internseg.records).
import os
import re
import shlex

from snakemake.exceptions import WorkflowError

from internseg.config import cfg_options_args, workflow_sources
from internseg.data_sources import missing_data
from internseg.datasets import DATASETS
from internseg.engine.traces import check_traced_fit, traces_dir
from internseg.errors import InputError
from internseg.io import check_creatable
from internseg.preparation import (
    download_args,
    download_receipt,
    downloaded_file,
    prepare_args,
    preparation_inputs,
    preset_data_settings,
    source_argument,
    source_files,
)
from internseg.records import (
    check_hub_revisions,
    fetch_args,
    hub_files,
    hub_pins,
    record_of,
)
from internseg.results.drift import drift_args
from internseg.registry import check_moves, experiments, plan_runs, table15_runs
from internseg.trunks import TRUNKS

PRESET = config["preset"]
SETTINGS = config["presets"][PRESET]
EXPERIMENTS = experiments(PRESET)
RUN_NAMES = config["run"]
GRID = SETTINGS["table15"]
# Run objects by id, <dataset>/<trunk>/<experiment>[/seed<N>]: each experiment of `run` on
# each chosen trunk and dataset with each training seed (ROW_RUNS, the `all` target), and
# the Table 15 grid (GRID_RUNS, the `table15` target).
try:
    ROW_RUNS = plan_runs(
        RUN_NAMES,
        EXPERIMENTS,
        SETTINGS["trunks"],
        SETTINGS["datasets"],
        SETTINGS["train_seeds"],
    )
    GRID_RUNS = table15_runs(
        EXPERIMENTS, GRID["trunks"], GRID["datasets"], SETTINGS["train_seeds"]
    )
    RUN_OF = ROW_RUNS | GRID_RUNS
    check_moves(PRESET, RUN_OF, EXPERIMENTS)
    # a run whose rehearsal does not fit its GPUs fails here, not after a day in the queue
    check_traced_fit(
        PRESET,
        RUN_OF.values(),
        max(SETTINGS["train"]["gpus"], 1),
        traces_dir(PRESET),
        config["gpu_memory_gb"],
    )
except InputError as err:
    raise WorkflowError(
        f"config.yaml (preset {PRESET}, configs in core/internseg/configs/{PRESET}/): {err}"
    ) from None
RES = f"resources/{PRESET}"
# Each registered dataset's settings (config.yaml's data block, else its entry's), checked
# here, named by their config keys: in a job they would name the options built from them.
try:
    DATA_SETTINGS = preset_data_settings(PRESET, SETTINGS, DATASETS)
except InputError as err:
    raise WorkflowError(f"config.yaml: {err}") from None
OUT = f"results/{PRESET}"
RUNS_DIR = f"{OUT}/runs"
ENV = "../../envs/internseg.yaml"
# before any job: Snakemake fails on a read-only one only when a job's output folder is made
try:
    for folder in (OUT, f"work/{PRESET}", RES):
        check_creatable(folder, "output folder")
except InputError as err:
    raise WorkflowError(str(err)) from None
PINS = hub_pins() if SETTINGS["verify_hub_pins"] else {}

RESULTS = [
    f"{OUT}/{name}"
    for name in (
        "table.csv",
        "summary.csv",
        "table.md",
        "miou_vs_fraction.png",
        "trunk_regimes.png",
        "training_curves.png",
        "provenance.csv",
        "plan.md",
    )
]
TABLE15 = [f"{OUT}/table15.md", f"{OUT}/table15.csv", f"{OUT}/table15.png"]


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    run="|".join(map(re.escape, RUN_OF)),
    dataset="|".join(DATASETS),
    trunk="|".join(TRUNKS),
    stem=r"[^/]+",


def data_root(dataset):
    return f"{RES}/{dataset}"


def data_tree(dataset):
    """The prepared tree the dataloaders read (internseg.datasets: Dataset.tree)."""
    return f"{data_root(dataset)}/{DATASETS[dataset].tree}"


def manifest(dataset):
    return f"{data_root(dataset)}/manifest.json"


def weights_of(trunk):
    return f"{RES}/weights/{TRUNKS[trunk].file}"


def run_of(wildcards):
    return RUN_OF[wildcards.run]


def run_manifest(wildcards):
    return manifest(run_of(wildcards).dataset)


def run_weights(wildcards):
    """The pretrained file of the trunk the run starts from."""
    return weights_of(run_of(wildcards).trunk)


def run_config(wildcards):
    return f"{PRESET}/{run_of(wildcards).experiment}"


def run_sources(wildcards):
    """The run's config file and every file of its `_base_` chain."""
    return workflow_sources(run_config(wildcards), os.getcwd())


def seed_of(experiment):
    return lookup(
        dpath=f"presets/{PRESET}/seeds/{experiment}",
        within=config,
        default=SETTINGS["seed"],
    )


def own_record(experiment):
    """The record of the experiment as its config is written (own trunk and dataset): the
    original's run, whose published log holds the seed its subset was drawn with."""
    exp = EXPERIMENTS[experiment]
    return record_of(exp.trunk.name, experiment, exp.dataset.name)


def seed_log(experiment):
    record = own_record(experiment)
    if record is None or not record.published_log:
        raise WorkflowError(
            f"{EXPERIMENTS[experiment].config}: no published log to read the seed from "
            f"(core/internseg/configs/metafile.yaml); set presets.{PRESET}.seeds."
            f"{experiment} to an integer"
        )
    return f"{RES}/published/{record.published_log}"


def run_record(run):
    return record_of(run.trunk, run.experiment, run.dataset)


# The original's training log of a run, where its record has one and the preset reads logs
# (`seed: log`): the table reads its validation mIoU and the plots its curves.
PUBLISHED = {
    run_id: f"{RES}/published/{run_record(run).published_log}"
    for run_id, run in RUN_OF.items()
    if seed_of(run.experiment) == "log"
    and run_record(run)
    and run_record(run).published_log
}

# Every Hub file the runs may fetch (their trunks', their records' logs and released
# checkpoints, the logs their splits' seeds are read from) has a pinned revision: a trunk's
# own (core/internseg/trunks.py) or config.yaml's hub.revision.
try:
    check_hub_revisions(
        hub_files(
            [run.trunk for run in RUN_OF.values()],
            [run_record(run) for run in RUN_OF.values()]
            + [
                own_record(run.experiment)
                for run in RUN_OF.values()
                if seed_of(run.experiment) == "log"
            ],
        ),
        config["hub"],
        PRESET,
        SETTINGS["weights_local_dir"],
    )
except InputError as err:
    raise WorkflowError(str(err)) from None


def reference_log(wildcards):
    """The original's published log of the run, where it has one (PUBLISHED): its training
    is compared with it (internseg train --reference-log)."""
    return PUBLISHED.get(wildcards.run, [])


def drift_options(wildcards):
    """--reference-log and config.yaml's `drift` settings for a run with a published log; a
    function of the wildcards, so a changed setting reruns the job (which resumes its
    finished work dir: nothing is retrained)."""
    log = PUBLISHED.get(wildcards.run)
    return "" if log is None else shlex.join(drift_args(log, config.get("drift")))


def split_inputs(wildcards):
    inputs = {"manifest": run_manifest(wildcards)}
    if seed_of(run_of(wildcards).experiment) == "log":
        inputs["log"] = seed_log(run_of(wildcards).experiment)
    return inputs


def seed_option(wildcards):
    """A function of the wildcards only: Snakemake records such params and reruns a split
    whose seed changed (a param that reads `input` is not recorded)."""
    experiment = run_of(wildcards).experiment
    seed = seed_of(experiment)
    if seed == "log":
        return f"--seed-from-log {seed_log(experiment)}"
    return "" if seed is None else f"--seed {seed}"


def train_seed_option(wildcards):
    """The run's training seed, when `train_seeds` chose one; else training takes the seed
    its subset was drawn with (--seed-record), as the original's runs did."""
    seed = run_of(wildcards).train_seed
    return "" if seed is None else f"--seed {seed}"


def run_options(wildcards):
    """Where the run's config runs (--trunk, --dataset) and the preset's `cfg_options`; a
    param, so a changed option reruns what it changes."""
    run = run_of(wildcards)
    options = dict(
        lookup(dpath=f"presets/{PRESET}/cfg_options", within=config, default={})
    )
    words = ["--trunk", run.trunk, "--dataset", run.dataset, *cfg_options_args(options)]
    return shlex.join(words)


def fetch_options(filename):
    """The options of `internseg fetch` (records.fetch_args): the file's Hub repo and
    revision (its trunk entry's, else config.yaml's hub block), pins, local folder."""
    return shlex.join(
        fetch_args(filename, config["hub"], PINS, SETTINGS["weights_local_dir"])
    )


def local_source(filename):
    """The file in `weights_local_dir`, when the preset takes its files from a folder."""
    folder = SETTINGS["weights_local_dir"]
    return f"{folder}/{filename}" if folder else []


RUN_FILES = [
    "metrics.json",
    "split.json",
    "config.py",
    "scalars.jsonl",
    "provenance.json",
]


def run_files(runs):
    return expand("{dir}/{run}/{name}", dir=RUNS_DIR, run=runs, name=RUN_FILES)


def aggregate_params(runs):
    """The run folders and their published logs and released metrics, as CLI words."""
    return dict(
        runs=expand("{dir}/{run}", dir=RUNS_DIR, run=runs),
        published=[f"{r}={PUBLISHED[r]}" for r in runs if r in PUBLISHED],
        released=[f"{r}={RELEASED[r]}" for r in runs if r in RELEASED],
    )


TOLERANCE = (
    f"--tolerance {config['tolerance']}" if config.get("tolerance") is not None else ""
)
