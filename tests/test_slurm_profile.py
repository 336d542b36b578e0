"""profiles/slurm: what it holds, how its expressions evaluate, and `make slurm-profile`
making `--profile slurm` resolve to it from anywhere. No Slurm needed."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

BIN = Path(sys.executable).parent
PROFILE = REPO / "profiles" / "slurm"


@pytest.fixture(scope="module")
def profile():
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def test_profile_has_the_keys_a_cluster_run_needs(profile):
    assert profile["executor"] == "slurm"
    assert isinstance(profile["jobs"], int) and profile["jobs"] >= 8
    assert profile["latency-wait"] >= 30
    assert profile["retries"] >= 1  # a training stopped at its time limit is resubmitted
    assert profile["rerun-incomplete"] is True
    for key in ("slurm_account", "slurm_partition", "runtime", "mem_mb"):
        assert key in profile["default-resources"], key
    for rule in ("train", "evaluate"):
        resources = profile["set-resources"][rule]
        for key in ("slurm_partition", "cpus_per_gpu", "runtime"):
            assert key in resources, (rule, key)
        assert "attempt" in resources["runtime"], rule
    assert "--signal=URG@" in profile["set-resources"]["train"]["slurm_extra"]


def test_only_one_unversioned_profile_file():
    # Snakemake picks arbitrarily between config.yaml and profile.yaml when both exist.
    names = {p.name for p in PROFILE.iterdir()}
    assert "config.yaml" in names
    assert not names & {"profile.yaml"}, names


def evaluate(expression, attempt=1):
    from snakemake.resources import Resource

    return Resource.cli_evaluator("r", str(expression), wildcards=None, input=None,
                                  attempt=attempt, async_run=None)


def test_runtime_grows_with_attempt_up_to_a_cap(profile):
    train = profile["set-resources"]["train"]["runtime"]
    runtimes = [evaluate(train, attempt) for attempt in (1, 2, 3, 4)]
    assert runtimes[0] < runtimes[1] == runtimes[2] == runtimes[3]


def test_account_and_partitions_come_from_the_environment(profile, monkeypatch):
    defaults, train = profile["default-resources"], profile["set-resources"]["train"]
    for name in ("INTERNSEG_SLURM_ACCOUNT", "INTERNSEG_SLURM_PARTITION",
                 "INTERNSEG_SLURM_GPU_PARTITION"):
        monkeypatch.delenv(name, raising=False)
    # unset: no -A and the cluster's default partition (the plugin treats "" as not given)
    assert evaluate(defaults["slurm_account"]) == ""
    assert evaluate(defaults["slurm_partition"]) == ""
    assert evaluate(train["slurm_partition"]) == "gpu"
    monkeypatch.setenv("INTERNSEG_SLURM_ACCOUNT", "proj42")
    monkeypatch.setenv("INTERNSEG_SLURM_GPU_PARTITION", "a100")
    assert evaluate(defaults["slurm_account"]) == "proj42"
    assert evaluate(train["slurm_partition"]) == "a100"


def make_slurm_profile(home: Path, xdg: Path | None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HOME=str(home))
    env.pop("XDG_CONFIG_HOME", None)
    if xdg is not None:
        env["XDG_CONFIG_HOME"] = str(xdg)
    return subprocess.run(["make", "-s", "-C", str(REPO), "slurm-profile"], env=env,
                          capture_output=True, text=True)


def resolve_profile(name: str, cwd: Path, env: dict) -> str:
    """Snakemake's own lookup of `--profile <name>`, in a fresh process with `env`."""
    code = ("from snakemake.cli import get_profile_dir; "
            f"d, f = get_profile_dir({name!r}); print(d); print(f)")
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.split()


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
@pytest.mark.parametrize("use_xdg", [True, False], ids=["XDG_CONFIG_HOME", "HOME"])
def test_make_slurm_profile_lets_snakemake_find_it_by_name(tmp_path, use_xdg):
    home, xdg, elsewhere = tmp_path / "home", tmp_path / "xdg", tmp_path / "elsewhere"
    for d in (home, elsewhere):
        d.mkdir()
    made = make_slurm_profile(home, xdg if use_xdg else None)
    assert made.returncode == 0, made.stderr
    link = (xdg if use_xdg else home / ".config") / "snakemake" / "slurm"
    assert link.is_symlink() and link.resolve() == PROFILE.resolve()
    # idempotent: running it again replaces the link instead of failing
    assert make_slurm_profile(home, xdg if use_xdg else None).returncode == 0

    env = dict(os.environ, HOME=str(home))
    env.pop("XDG_CONFIG_HOME", None)
    if use_xdg:
        env["XDG_CONFIG_HOME"] = str(xdg)
    directory, config = resolve_profile("slurm", elsewhere, env)
    assert Path(directory).resolve() == PROFILE.resolve()
    assert Path(config).name == "config.yaml"


def test_snakemake_runs_with_the_profile_by_name(tmp_path, monkeypatch):
    """`snakemake --profile slurm -n` in a copy of the workflow, found via the user config
    dir: the profile's per-rule resources reach the jobs."""
    xdg = tmp_path / "xdg"
    (xdg / "snakemake").mkdir(parents=True)
    (xdg / "snakemake" / "slurm").symlink_to(PROFILE)
    wf = tmp_path / "wf"
    wf.mkdir()
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, wf / name)
    for name in ("workflow", "envs"):
        shutil.copytree(REPO / name, wf / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERNSEG_SLURM_")}
    env.update(XDG_CONFIG_HOME=str(xdg), INTERNSEG_SLURM_GPU_PARTITION="a100",
               PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run([str(BIN / "snakemake"), "--profile", "slurm", "-n",
                             "--config", "run=[fewshot_1of16]"], cwd=wf, env=env,
                            capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "Using profile slurm" in out
    train = out.split("rule train:")[1].split("rule ")[0]
    assert "slurm_partition=a100" in train
    assert "slurm_extra=--signal=URG@600" in train
    assert "runtime=1440" in train
    assert "gpu=0" in train  # the demo preset's GPU count, not overridden by the profile
