"""The workflow through a real Slurm: sbatch submission, resources, and a training that runs
into its time limit being resubmitted and resuming.

Needs a cluster that answers `sinfo` and has a `gpu` partition, e.g. the one-node cluster of
``sudo tests/slurm/start_local_slurm.sh`` (what `.ci/run` starts). The runs use a test copy of
profiles/slurm: the same keys, with small runtimes and `squeue` for job status (sacct needs
slurmdbd, which the local cluster does not run).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO

pytestmark = pytest.mark.slurm

BIN = Path(sys.executable).parent


def slurm_skip_reason() -> str | None:
    if shutil.which("sinfo") is None:
        return "no Slurm here (`sinfo` not found); start one: sudo tests/slurm/start_local_slurm.sh"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True,
                             timeout=20)
    except subprocess.TimeoutExpired:
        return "`sinfo` does not answer; is slurmctld running? (tests/slurm/start_local_slurm.sh)"
    if out.returncode != 0:
        return f"`sinfo` fails ({out.stderr.strip()}); start: sudo tests/slurm/start_local_slurm.sh"
    if "gpu" not in out.stdout.split():
        return "this Slurm has no `gpu` partition (tests/slurm/start_local_slurm.sh makes one)"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    reason = slurm_skip_reason()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI starts a Slurm for these tests (.ci/run), but {reason}")
    if reason:
        pytest.skip(reason)


def make_test_profile(tmp_path: Path, **changes) -> Path:
    """profiles/slurm with test-sized values; `changes` maps a dotted key to its new value."""
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    profile.update({
        "jobs": 2,
        "latency-wait": 5,
        "retries": 0,
        "keep-going": False,
        # `sbatch call: ...` lines in the log: the evidence of what was requested
        "verbose": True,
        "slurm-status-command": "squeue",
        "slurm-init-seconds-before-status-checks": 1,
        "slurm-keep-successful-logs": True,
        # leave a core to whatever else runs on the machine
        "set-threads": {"train": 1, "evaluate": 1},
    })
    profile["default-resources"].update(slurm_partition="cpu", runtime=10, mem_mb=1000)
    # 20 minutes: the profile's warning comes 10 minutes (URG@600) before the limit, and a
    # trainer honours a warning even when it arrives while the run is still being built
    profile["set-resources"]["train"].update(gpu=1, cpus_per_gpu=1, mem_mb=3000, runtime=20)
    profile["set-resources"]["evaluate"].update(gpu=1, cpus_per_gpu=1, mem_mb=2000,
                                                runtime=10)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = profile
        for key in parents:
            node = node[key]
        node[leaf] = value
    directory = tmp_path / "profile"
    directory.mkdir()
    (directory / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return directory


def workflow_copy(dest: Path) -> Path:
    dest.mkdir()
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, dest / name)
    # envs/: the rules' `conda:` file, which Snakemake reads when it records a job's metadata
    for name in ("workflow", "envs"):
        shutil.copytree(REPO / name, dest / name)
    return dest


def run_through_slurm(workdir: Path, profile: Path, experiment: str, limit_s: int,
                      target: str = "all"):
    """Snakemake with the profile, under `timeout -s INT`: on SIGTERM Snakemake only waits
    for its running jobs, SIGINT makes it cancel them (scancel) and stop."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERNSEG_SLURM_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"  # the rules call `internseg`
    cmd = ["timeout", "-s", "INT", "-k", "60", str(limit_s), str(BIN / "snakemake"), target,
           "--profile", str(profile), *(["--configfile", "options.yaml"] if (
               workdir / "options.yaml").is_file() else []), "--config", f"run=[{experiment}]"]
    result = subprocess.run(cmd, cwd=workdir, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    (workdir / "snakemake.out").write_text(result.stdout)
    return result.returncode, result.stdout


DEMO_TRUNK = "intern_vit_tiny_demo"


def runs(experiment: str) -> str:
    """The results folder of an experiment's demo run (run id <dataset>/<trunk>/<experiment>)."""
    return f"results/demo/runs/ade20k/{DEMO_TRUNK}/{experiment}"


def slurm_logs(workdir: Path, rule: str, experiment: str) -> list[Path]:
    # the plugin names the folder by the wildcards, "/" replaced by "_"
    folder = (workdir / ".snakemake/slurm_logs" / f"rule_{rule}"
              / f"ade20k_{DEMO_TRUNK}_{experiment}")
    return sorted(folder.glob("*.log"), key=lambda p: int(p.stem))


def test_demo_experiment_runs_through_sbatch_with_its_resources(tmp_path):
    wf = workflow_copy(tmp_path / "wf")
    profile = make_test_profile(tmp_path)
    code, out = run_through_slurm(wf, profile, "fewshot_1of16", limit_s=900)
    assert code == 0, out[-5000:]

    for rule in ("train", "evaluate"):
        assert len(slurm_logs(wf, rule, "fewshot_1of16")) == 1, f"{rule} went through sbatch"
    assert list((wf / ".snakemake/slurm_logs/rule_make_demo").glob("*.log"))

    calls = [line for line in out.splitlines()
             if line.startswith("sbatch call:") and "rule_train_wildcards" in line]
    assert len(calls) == 1, out[-5000:]
    call = calls[0].split(" --wrap=")[0]
    for expected in (" -p gpu ", " --gpus=1", " --mem 3000 ", " -t 20 ", " --cpus-per-gpu=1",
                     " --signal=URG@600"):
        assert expected in f"{call} ", (expected, call)

    # What Slurm itself recorded; finished jobs stay queryable for MinJobAge (300 s).
    job_id = slurm_logs(wf, "train", "fewshot_1of16")[0].stem
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                           text=True).stdout
    if shown:
        assert "Partition=gpu " in shown, shown
        assert "TimeLimit=00:20:00" in shown, shown
        assert re.search(r"gres[:/]gpu[:=]1", shown), shown

    for path in ("results/demo/table.csv", "results/demo/table.md",
                 "results/demo/miou_vs_fraction.png",
                 f"{runs('fewshot_1of16')}/metrics.json",
                 f"{runs('fewshot_1of16')}/final.pth"):
        assert (wf / path).is_file(), path


# mmengine's own line when a run continues from a checkpoint (Runner.resume).
RESUMED = re.compile(r"resumed epoch: \d+, iter: (\d+)")
SLOW = "full_tuning"  # the slowest demo training: ~0.3 s/iteration on one thread
SLOW_ITERS = 320  # twice the demo's 160 (options.yaml): about 1.5 minutes


@pytest.fixture(scope="module")
def timed_out_run(tmp_path_factory):
    """The slow experiment with a 1-minute limit on the first attempt, 10 on the retry.

    1 minute is Slurm's smallest limit; the training needs about 1.5. Slurm checks limits
    every 30 s and sends the warning signal one check early, so URG@10 arrives 20-50 s
    after the start: after the trainer has set up its handler (~10 s), well before the
    limit (60-90 s) and the end of the training (~100 s)."""
    # up to the evaluation: the table is not what this is about
    return run_into_time_limit(tmp_path_factory.mktemp("timelimit"), limit_s=1200,
                               target=f"{runs(SLOW)}/metrics.json")


def run_into_time_limit(tmp: Path, *, limit_s: int, target: str, cfg_options=(),
                        **profile_changes) -> dict:
    """The slow experiment through the profile, its first attempt limited to 1 minute."""
    wf = workflow_copy(tmp / "wf")
    options = ", ".join([f"train_cfg.max_iters: {SLOW_ITERS}",
                         *(f"{key}: {value}" for key, value in cfg_options)])
    (wf / "options.yaml").write_text(f"presets:\n  demo:\n    cfg_options: {{{options}}}\n")
    profile = make_test_profile(
        tmp,
        **{"retries": 1,
           "set-resources.train.runtime": "1 if attempt == 1 else 10",
           "set-resources.train.slurm_extra": "'--signal=URG@10'",
           **profile_changes})
    code, out = run_through_slurm(wf, profile, SLOW, limit_s=limit_s, target=target)
    # what each attempt printed before it held the work dir (the launch of the ranks), then
    # the trainer's own log, which keeps every attempt
    logs = [wf / runs(SLOW) / name for name in ("train.launch.log", "train.log")]
    log_text = "".join(p.read_text() for p in logs if p.is_file())
    return dict(wf=wf, code=code, out=out, log=log_text,
                attempts=slurm_logs(wf, "train", SLOW),
                detail=f"{out[-4000:]}\n--- train.log ---\n{log_text[-3000:]}")


def test_training_past_its_time_limit_is_resubmitted_and_resumes(timed_out_run):
    run = timed_out_run
    assert len(run["attempts"]) == 2, (run["attempts"], run["detail"])
    assert "Trying to restart job" in run["out"], run["detail"]
    assert run["code"] == 0, run["detail"]
    # train.log keeps both attempts; the first resume in it is the second attempt's. It
    # continued a checkpoint from the middle of the first attempt, not from scratch or the end.
    resumed = RESUMED.search(run["log"])
    assert resumed and 0 < int(resumed.group(1)) < SLOW_ITERS, run["detail"]
    assert (run["wf"] / runs(SLOW) / "metrics.json").is_file()


def test_first_attempt_stopped_on_the_warning_signal_before_the_limit(timed_out_run):
    run = timed_out_run
    first = run["attempts"][0].stem
    # The plugin reports Slurm's state: TIMEOUT when the limit killed the job, FAILED when
    # the trainer stopped it with its non-zero exit.
    assert f"SLURM-job '{first}' failed, SLURM status is: 'FAILED'" in run["out"], run["detail"]
    launch_logs = (run["wf"] / "work/demo/ade20k" / DEMO_TRUNK / SLOW).glob("*/*.log")
    assert any("SIGURG" in p.read_text() for p in launch_logs), run["detail"]


# 2 images per rank as the paper's 16 over 8 GPUs: the UperNet head's batch norm refuses one
TWO_RANK_BATCH = (("total_batch_size", 4), ("train_dataloader.batch_size", 2))


@pytest.fixture(scope="module")
def two_rank_timed_out_run(tmp_path_factory):
    """The slow experiment sharded over two ranks (gloo on CPU, `--gpus 2` as the paper
    preset's `--gpus 8`), through the profile, with the same 1-minute first attempt as
    above. Needs two GRES GPUs on the node (.ci/run starts the cluster with 2)."""
    return run_into_time_limit(tmp_path_factory.mktemp("tworanks"), limit_s=1500,
                               target=f"{runs(SLOW)}/final.pth", cfg_options=TWO_RANK_BATCH,
                               **{"set-resources.train.gpu": 2})


def test_two_ranks_stop_together_on_the_signal_and_resume_to_an_uninterrupted_run(
        two_rank_timed_out_run, tmp_path):
    run = two_rank_timed_out_run
    wf = run["wf"]
    assert run["code"] == 0 and len(run["attempts"]) == 2, (run["attempts"], run["detail"])
    # inside a Snakemake Slurm job (already an srun step) the ranks are started by torchrun
    assert "torch.distributed.run" in run["log"] and "--nproc-per-node=2" in run["log"]
    first = "".join(p.read_text() for p in sorted(
        (wf / "work/demo/ade20k" / DEMO_TRUNK / SLOW).glob("*/*.log"))[:1])
    stop = re.search(r"stop requested by SIGURG: saved iter_(\d+)\.pth", first)
    assert stop, run["detail"]
    resumed = RESUMED.search(run["log"])
    assert resumed and resumed.group(1) == stop.group(1), run["detail"]

    # the same command outside Slurm, never interrupted
    folder = wf / runs(SLOW)
    straight = tmp_path / "final.pth"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    subprocess.run([str(BIN / "internseg"), "train", f"demo/{SLOW}", "--work-dir",
                    str(tmp_path / "work"), "--data-root",
                    str(wf / "resources/demo/ade20k/ADEChallengeData2016"), "--split",
                    str(folder / "split.txt"), "--seed-record", str(folder / "split.json"),
                    "--pretrained", str(wf / "resources/demo/weights/intern_vit_tiny_demo.pth"),
                    "--deterministic", "--threads", "1", "--gpus", "2",
                    "--final-checkpoint", str(straight),
                    "--cfg-options", f"train_cfg.max_iters={SLOW_ITERS}",
                    *(f"{key}={value}" for key, value in TWO_RANK_BATCH)],
                   check=True, capture_output=True, env=env, cwd=wf, timeout=900)
    ours = torch.load(folder / "final.pth", weights_only=True)
    expected = torch.load(straight, weights_only=True)
    assert ours["meta"]["run_identity"] == expected["meta"]["run_identity"]
    assert ours["meta"]["batch_plan"]["world_size"] == 2
    different = [k for k in expected["state_dict"]
                 if not torch.equal(ours["state_dict"][k], expected["state_dict"][k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
