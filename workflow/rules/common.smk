# Names and paths shared by the rules. No experiment logic lives here: the `internseg` CLI
# does the work, the rules only say what goes in and out. Which experiments and trunks exist,
# and their facts, come from the registry (internseg.registry, internseg.trunks).
import os
import re
import shlex

from snakemake.exceptions import WorkflowError

from internseg.config import cfg_options_args, workflow_sources
from internseg.errors import InputError
from internseg.registry import (
    check_moves,
    experiments,
    hub_pins,
    on_own_trunk,
    plan_runs,
)
from internseg.trunks import TRUNKS

PRESET = config["preset"]
SETTINGS = config["presets"][PRESET]
EXPERIMENTS = experiments(PRESET)
RUN = config["run"]
# every run by id, <trunk>/<experiment>[/seed<N>]: each experiment of `run` on each chosen
# trunk with each training seed (internseg.registry.plan_runs)
try:
    RUNS_PLANNED = plan_runs(
        RUN, EXPERIMENTS, SETTINGS.get("trunks"), SETTINGS.get("train_seeds")
    )
    check_moves(PRESET, RUNS_PLANNED, EXPERIMENTS)
except InputError as err:
    raise WorkflowError(
        f"config.yaml (preset {PRESET}, configs in core/internseg/configs/{PRESET}/): {err}"
    ) from None
RES = f"resources/{PRESET}"
DATA_ROOT = f"{RES}/ade/ADEChallengeData2016"
MANIFEST = f"{RES}/ade/manifest.json"
RUNS = "results/runs"
ENV = "../../envs/internseg.yaml"
PINS = (
    hub_pins(EXPERIMENTS if PRESET == "paper" else None)
    if SETTINGS["verify_hub_pins"]
    else {}
)

if not config["hub"]["revision"] and not SETTINGS["weights_local_dir"]:
    raise ValueError(
        f"config.yaml: hub.revision is null but preset {PRESET!r} downloads from the Hub "
        f"(presets.{PRESET}.weights_local_dir is null): pin hub.revision to a 40-hex commit"
    )

RESULTS = [
    "results/table.csv",
    "results/summary.csv",
    "results/table.md",
    "results/miou_vs_fraction.png",
    "results/trunk_regimes.png",
    "results/training_curves.png",
    "results/provenance.csv",
    "results/plan.md",
]


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    run="|".join(map(re.escape, RUNS_PLANNED)),
    stem=r"[^/]+",


def experiment_of(wildcards):
    """The experiment a job is about: its `experiment` wildcard, or its run's."""
    if hasattr(wildcards, "run"):
        return RUNS_PLANNED[wildcards.run].experiment
    return wildcards.experiment


def own_trunk(run):
    return on_own_trunk(run, EXPERIMENTS)


def experiment_config(wildcards):
    return f"{PRESET}/{experiment_of(wildcards)}"


def experiment_sources(wildcards):
    """The experiment's config file and every file of its `_base_` chain."""
    return workflow_sources(experiment_config(wildcards), os.getcwd())


def trunk_weights(wildcards):
    """The pretrained file of the trunk the run (or the released checkpoint) starts from."""
    if hasattr(wildcards, "run"):
        return f"{RES}/weights/{TRUNKS[RUNS_PLANNED[wildcards.run].trunk].file}"
    return f"{RES}/weights/{EXPERIMENTS[wildcards.experiment].trunk.file}"


def seed_of(experiment):
    return lookup(
        dpath=f"presets/{PRESET}/seeds/{experiment}",
        within=config,
        default=SETTINGS["seed"],
    )


def published_log(experiment):
    log = EXPERIMENTS[experiment].published_log
    if log is None:
        raise WorkflowError(
            f"{EXPERIMENTS[experiment].config}: no published_log to read the seed from; "
            f"set presets.{PRESET}.seeds.{experiment} to an integer"
        )
    return f"{RES}/published/{log}"


# Experiments whose published training log is fetched (for the seed); the table also reads
# the original's validation mIoU from it.
LOGGED = [e for e in RUN if seed_of(e) == "log"]
# Runs the original's log is the reference of: a logged experiment on its own trunk.
PUBLISHED = [
    r for r, run in RUNS_PLANNED.items() if run.experiment in LOGGED and own_trunk(run)
]


def split_inputs(wildcards):
    inputs = {"manifest": MANIFEST}
    if seed_of(experiment_of(wildcards)) == "log":
        inputs["log"] = published_log(experiment_of(wildcards))
    return inputs


def seed_option(wildcards):
    """A function of the wildcards only: Snakemake records such params and reruns a split
    whose seed changed (a param that reads `input` is not recorded)."""
    experiment = experiment_of(wildcards)
    seed = seed_of(experiment)
    if seed == "log":
        return f"--seed-from-log {published_log(experiment)}"
    return "" if seed is None else f"--seed {seed}"


def train_seed_option(wildcards):
    """The run's training seed, when `train_seeds` chose one; else training takes the seed
    its subset was drawn with (--seed-record), as the original's runs did."""
    seed = RUNS_PLANNED[wildcards.run].train_seed
    return "" if seed is None else f"--seed {seed}"


def cfg_options(wildcards):
    """`--cfg-options` for every run of the preset (presets.<preset>.cfg_options) and the
    run's trunk when it is not the config's own; a param, so a changed option reruns what it
    changes."""
    options = dict(
        lookup(dpath=f"presets/{PRESET}/cfg_options", within=config, default={})
    )
    if hasattr(wildcards, "run") and not own_trunk(RUNS_PLANNED[wildcards.run]):
        options["trunk"] = RUNS_PLANNED[wildcards.run].trunk
    return shlex.join(cfg_options_args(options))


def hub_pin(filename):
    """Command-line options that pin a Hub file's size and sha256, when it has pins."""
    pin = PINS.get(filename)
    opts = [f"--repo-id {config['hub']['repo_id']}"]
    if config["hub"]["revision"]:
        opts.append(f"--revision {config['hub']['revision']}")
    if pin:
        opts.append(f"--sha256 {pin.sha256}")
    if pin and pin.size is not None:
        opts.append(f"--size {pin.size}")
    if SETTINGS["weights_local_dir"]:
        opts.append(f"--local-dir {SETTINGS['weights_local_dir']}")
    return " ".join(opts)
