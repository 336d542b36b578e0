import sys

import pytest

from internseg.cli import strip_option
from internseg.config import load_config
from internseg.engine.batching import (BatchPlan, apply_batch_plan, plan_batch,
                                       world_size_from_env)
from internseg.engine.launch import launch_command


@pytest.mark.parametrize("world,per_gpu,accumulation", [
    (8, 2, 1),   # the paper
    (4, 2, 2),
    (2, 2, 4),
    (1, 2, 8),
    (16, 1, 1),  # more GPUs than the batch can give 2 each
])
def test_effective_batch_stays_16(world, per_gpu, accumulation):
    plan = plan_batch(16, 2, world)
    assert plan == BatchPlan(world, per_gpu, accumulation)
    assert plan.effective == 16


def test_impossible_split_is_named():
    with pytest.raises(ValueError, match="16 cannot be split over 3"):
        plan_batch(16, 2, 3)


def test_world_size_comes_from_the_launcher_environment():
    assert world_size_from_env("none", {}) == 1
    assert world_size_from_env("pytorch", {"WORLD_SIZE": "4"}) == 4
    assert world_size_from_env("slurm", {"SLURM_NTASKS": "8"}) == 8
    with pytest.raises(ValueError, match="SLURM_NTASKS"):
        world_size_from_env("slurm", {})


def test_accumulation_stretches_loop_counts_not_the_schedule():
    cfg = load_config("paper/fewshot_1of16")
    sched_ends = [s.end for s in cfg.param_scheduler]
    apply_batch_plan(cfg, plan_batch(16, 2, 2))
    assert cfg.optim_wrapper.accumulative_counts == 4
    assert cfg.train_cfg.max_iters == 5000 * 4
    assert cfg.train_cfg.val_interval == 1000 * 4
    assert cfg.default_hooks.checkpoint.interval == 1000 * 4
    assert [s.end for s in cfg.param_scheduler] == sched_ends  # counted in updates
    assert cfg.batch_plan == dict(world_size=2, per_gpu=2, accumulation=4, effective=16)


def test_scheduler_hook_steps_once_per_update():
    from internseg.engine.batching import UpdateStepParamSchedulerHook

    class Scheduler:
        by_epoch, steps = False, 0

        def step(self):
            Scheduler.steps += 1

    class Runner:
        param_schedulers = [Scheduler()]
        optim_wrapper = type("W", (), {"_accumulative_counts": 4})()
        iter = 0

    hook, runner = UpdateStepParamSchedulerHook(), Runner()
    for it in range(12):
        runner.iter = it
        hook.after_train_iter(runner, it)
    assert Scheduler.steps == 3


def test_launch_inside_slurm_uses_srun_tasks():
    cmd = launch_command(["train", "paper/full_tuning"], 8, "none", {"SLURM_JOB_ID": "42"})
    assert cmd[:3] == ["srun", "--ntasks=8", "--kill-on-bad-exit=1"]
    assert cmd[-2:] == ["--launcher", "slurm"]


def test_launch_elsewhere_uses_torchrun_and_single_gpu_runs_in_process():
    cmd = launch_command(["train", "x"], 2, "none", {})
    assert cmd[:4] == [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    assert "--nproc-per-node=2" in cmd and cmd[-2:] == ["--launcher", "pytorch"]
    assert launch_command(["train", "x"], 1, "none", {}) is None
    # already a rank: never launch again
    assert launch_command(["train", "x"], 8, "slurm", {"SLURM_JOB_ID": "1"}) is None
    assert launch_command(["train", "x"], 8, "none",
                          {"SLURM_JOB_ID": "1", "SLURM_STEP_ID": "0"})[2] == "torch.distributed.run"


def test_every_train_option_reaches_the_ranks_through_torchruns_parser():
    # torchrun's argparse reads the whole command: an option of ours that abbreviates one of its
    # own (as --log did --log-dir) stops the launch before any rank starts
    from torch.distributed.run import get_args_parser

    from internseg.cli import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    ours = [s for a in train._actions for s in a.option_strings if s.startswith("--")]
    argv = ["train", "cfg", *(arg for s in ours for arg in (s, "v"))]
    cmd = launch_command(argv, 2, "none", {})
    torchrun = get_args_parser().parse_args(cmd[3:])
    assert [torchrun.training_script, *torchrun.training_script_args] == [
        "internseg", *argv, "--launcher", "pytorch"]


def test_strip_option_removes_both_spellings():
    assert strip_option(["train", "--gpus", "8", "c", "--gpus=2", "--seed", "1"], "--gpus") == [
        "train", "c", "--seed", "1"]
