# Names and paths shared by the rules. No experiment logic lives here: the `internseg` CLI
# does the work, the rules only say what goes in and out.
import os

from snakemake.exceptions import WorkflowError

PRESET = config["preset"]
SETTINGS = config["presets"][PRESET]
RUN = config["run"]
_no_entry = [e for e in RUN if e not in config["experiments"]]
if _no_entry:
    raise WorkflowError(
        f"config.yaml: run lists {', '.join(_no_entry)}, which have no entry under experiments"
    )
RES = f"resources/{PRESET}"
WEIGHTS = f"{RES}/weights/intern_vit_6b_224px.pth"
DATA_ROOT = f"{RES}/ade/ADEChallengeData2016"
MANIFEST = f"{RES}/ade/manifest.json"
RUNS = "results/runs"
ENV = "../../envs/internseg.yaml"

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
    experiment="|".join(config["experiments"]),
    stem=r"[^/]+",


def experiment_config(wildcards):
    return f"{PRESET}/{wildcards.experiment}"


def experiment_sources(wildcards):
    """The experiment's config file and every file of its `_base_` chain."""
    from internseg.config import config_sources

    return [str(path) for path in config_sources(experiment_config(wildcards))]


def seed_of(wildcards):
    return SETTINGS["seeds"].get(wildcards.experiment)


def published_log(experiment):
    return f"{RES}/published/{config['experiments'][experiment]['hub_stem']}.log"


# Experiments whose published training log is fetched (for the seed); the table also reads
# the original's validation mIoU from it.
LOGGED = [e for e in RUN if SETTINGS["seeds"].get(e) == "log"]


def split_inputs(wildcards):
    inputs = {"manifest": MANIFEST}
    if seed_of(wildcards) == "log":
        inputs["log"] = published_log(wildcards.experiment)
    return inputs


def seed_option(wildcards):
    """A function of the wildcards only: Snakemake records such params and reruns a split
    whose seed changed (a param that reads `input` is not recorded)."""
    seed = seed_of(wildcards)
    if seed == "log":
        return f"--seed-from-log {published_log(wildcards.experiment)}"
    return "" if seed is None else f"--seed {seed}"


def hub_pin(filename):
    """Command-line options that pin a Hub file's size and sha256, when config.yaml has them."""
    pin = (
        config["hub"]["files"].get(filename, {}) if SETTINGS["verify_hub_pins"] else {}
    )
    opts = [f"--repo-id {config['hub']['repo_id']}"]
    if config["hub"]["revision"]:
        opts.append(f"--revision {config['hub']['revision']}")
    if "sha256" in pin:
        opts.append(f"--sha256 {pin['sha256']}")
    if "size" in pin:
        opts.append(f"--size {pin['size']}")
    if SETTINGS["weights_local_dir"]:
        opts.append(f"--local-dir {SETTINGS['weights_local_dir']}")
    return " ".join(opts)
