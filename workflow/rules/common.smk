# Names and paths shared by the rules. No experiment logic lives here: the `internseg` CLI
# does the work, the rules only say what goes in and out. Which experiments and trunks exist,
# and their facts, come from the registry (internseg.registry, internseg.trunks).
import os
import re
import shlex

from snakemake.exceptions import WorkflowError

from internseg.config import cfg_options_args, workflow_sources
from internseg.registry import experiments, hub_pins
from internseg.trunks import TRUNKS

PRESET = config["preset"]
SETTINGS = config["presets"][PRESET]
EXPERIMENTS = experiments(PRESET)
RUN = config["run"]
_unknown = [e for e in RUN if e not in EXPERIMENTS]
if _unknown:
    raise WorkflowError(
        f"config.yaml: run lists {', '.join(_unknown)}, which have no config in "
        f"core/internseg/configs/{PRESET}/ (registered: {', '.join(EXPERIMENTS)})"
    )
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
    "results/table.md",
    "results/miou_vs_fraction.png",
    "results/training_curves.png",
]


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    stem=r"[^/]+",


def experiment_config(wildcards):
    return f"{PRESET}/{wildcards.experiment}"


def experiment_sources(wildcards):
    """The experiment's config file and every file of its `_base_` chain."""
    return workflow_sources(experiment_config(wildcards), os.getcwd())


def trunk_weights(wildcards):
    """The pretrained file of the trunk the experiment starts from."""
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


def split_inputs(wildcards):
    inputs = {"manifest": MANIFEST}
    if seed_of(wildcards.experiment) == "log":
        inputs["log"] = published_log(wildcards.experiment)
    return inputs


def seed_option(wildcards):
    """A function of the wildcards only: Snakemake records such params and reruns a split
    whose seed changed (a param that reads `input` is not recorded)."""
    seed = seed_of(wildcards.experiment)
    if seed == "log":
        return f"--seed-from-log {published_log(wildcards.experiment)}"
    return "" if seed is None else f"--seed {seed}"


def cfg_options(wildcards):
    """`--cfg-options` for every run of the preset (presets.<preset>.cfg_options); a param, so
    a changed option reruns what it changes."""
    options = lookup(dpath=f"presets/{PRESET}/cfg_options", within=config, default={})
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
