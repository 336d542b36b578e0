"""Jobs that survive their cluster: atomic checkpoints, fallback, preemption, exact resume."""

import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from internseg.engine.resilience import (EXIT_PREEMPTED, is_readable_checkpoint,
                                         iteration_seed, latest_valid_checkpoint)

BIN = Path(sys.executable).parent


def test_latest_valid_checkpoint_falls_back_past_a_corrupt_one(tmp_path):
    for it in (2, 4, 10):
        torch.save({"state_dict": {"w": torch.full((3,), it)}}, tmp_path / f"iter_{it}.pth")
    (tmp_path / ".iter_12.pth.partial").write_bytes(b"half")
    assert latest_valid_checkpoint(tmp_path) == tmp_path / "iter_10.pth"
    data = (tmp_path / "iter_10.pth").read_bytes()
    (tmp_path / "iter_10.pth").write_bytes(data[: len(data) // 2])  # killed mid-write
    assert not is_readable_checkpoint(tmp_path / "iter_10.pth")
    assert latest_valid_checkpoint(tmp_path) == tmp_path / "iter_4.pth"
    assert latest_valid_checkpoint(tmp_path / "nowhere") is None


def test_iteration_seeds_differ_by_iteration_and_rank():
    seeds = {iteration_seed(0, it, rank) for it in range(50) for rank in range(4)}
    assert len(seeds) == 200
    assert iteration_seed(3, 7, 0) == iteration_seed(3, 7, 0)


ITERS = 12


def train_cmd(demo_assets, work, final, extra=()):
    split = work.parent / "split.txt"
    split.write_text("".join(f"ADE_train_{i:08d}\n" for i in range(1, 13)))
    return [str(BIN / "internseg"), "train", "demo/fewshot_1of16", "--work-dir", str(work),
            "--data-root", str(demo_assets["data_root"]), "--split", str(split),
            "--pretrained", str(demo_assets["weights"]), "--seed", "0", "--deterministic",
            "--threads", "1", "--final-checkpoint", str(final),
            "--cfg-options", f"train_cfg.max_iters={ITERS}", "train_cfg.val_interval=5",
            "default_hooks.checkpoint.interval=4", "default_hooks.logger.interval=1",
            *extra]


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def rank_pid(launcher: int, rank: int) -> int:
    """The pid of torchrun's worker with LOCAL_RANK ``rank``."""
    for pid in children(launcher):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"LOCAL_RANK={rank}".encode() in environ:
            return pid
    raise LookupError(f"no rank {rank} among the children of {launcher}")


def run_until(cmd, iteration, sig, *, target=lambda proc: proc.pid):
    """Start a training, send ``sig`` to ``target(proc)`` once it has logged ``iteration``;
    return its status."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    pattern = re.compile(rf"Iter\(train\) \[\s*{iteration}/{ITERS}\]")
    output = []
    for line in proc.stdout:
        output.append(line)
        if pattern.search(line):
            os.kill(target(proc), sig)
            break
    rest, _ = proc.communicate(timeout=300)
    return proc.returncode, "".join(output) + rest


@pytest.fixture(scope="module")
def uninterrupted(demo_assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("straight")
    final = root / "final.pth"
    subprocess.run(train_cmd(demo_assets, root / "work", final), check=True,
                   capture_output=True)
    return torch.load(final, weights_only=True)["state_dict"]


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def assert_saved_at_stop_and_resumes_to(cmd, work, final, stop_at, expected, *, late=1):
    """A checkpoint of the stopping iteration (at most ``late`` after ``stop_at``) exists, no
    final one; resuming ends at ``expected``, bit for bit."""
    saved = latest_valid_checkpoint(work)
    assert saved is not None and stop_at <= int(saved.stem.split("_")[1]) <= stop_at + late, (
        stop_at, saved)
    assert not final.exists()
    resumed = subprocess.run(cmd + ["--auto-resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout[-2000:]
    assert_bitwise_equal(torch.load(final, weights_only=True)["state_dict"], expected)
    # the checkpoint of the stop is rotated out like the periodic ones (max_keep_ckpts=2),
    # not left on disk for good
    assert len(list(work.glob("iter_*.pth"))) == 2, sorted(p.name for p in work.iterdir())


def test_sigterm_saves_exits_75_and_resumes_bit_for_bit(demo_assets, tmp_path, uninterrupted):
    stop_at = random.Random().randint(2, ITERS - 2)
    final = tmp_path / "final.pth"
    cmd = train_cmd(demo_assets, tmp_path / "work", final)
    code, out = run_until(cmd, stop_at, signal.SIGTERM)
    assert code == EXIT_PREEMPTED, out[-2000:]
    assert_saved_at_stop_and_resumes_to(cmd, tmp_path / "work", final, stop_at, uninterrupted)


@pytest.mark.slow
def test_a_stop_signal_while_the_run_is_built_is_kept(demo_assets, tmp_path, uninterrupted):
    """SIGURG before the Runner exists (the 6B trunk takes minutes to build) would be ignored
    by default: it is recorded instead, and honoured after the first iteration."""
    final = tmp_path / "final.pth"
    cmd = train_cmd(demo_assets, tmp_path / "work", final)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    output = []
    for line in proc.stdout:  # logged before the Runner is built
        output.append(line)
        if "run identity" in line:
            os.kill(proc.pid, signal.SIGURG)
            break
    rest, _ = proc.communicate(timeout=300)
    out = "".join(output) + rest
    assert proc.returncode == EXIT_PREEMPTED, out[-2000:]
    assert "stop requested by SIGURG: saved iter_1.pth at iteration 1" in out
    assert_saved_at_stop_and_resumes_to(cmd, tmp_path / "work", final, 1, uninterrupted)


@pytest.mark.slow
def test_sigkill_at_a_random_iteration_resumes_bit_for_bit(demo_assets, tmp_path,
                                                           uninterrupted):
    kill_at = random.Random().randint(5, ITERS - 1)
    final = tmp_path / "final.pth"
    cmd = train_cmd(demo_assets, tmp_path / "work", final)
    code, _ = run_until(cmd, kill_at, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert list((tmp_path / "work").glob("iter_*.pth")), "a periodic checkpoint exists"
    resumed = subprocess.run(cmd + ["--auto-resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout[-2000:]
    assert "auto-resume: from" in resumed.stderr + resumed.stdout
    assert_bitwise_equal(torch.load(final, weights_only=True)["state_dict"], uninterrupted)


@pytest.mark.slow
def test_sharded_training_preempted_on_one_rank_resumes_bit_for_bit(demo_assets, tmp_path):
    """Two ranks on CPU (gloo) with the trunk sharded: a signal to one rank stops both at the
    same iteration with a checkpoint written, and the resumed run ends where an uninterrupted
    sharded run ends."""
    sharded = ["--gpus", "2"]
    straight = tmp_path / "straight.pth"
    subprocess.run(train_cmd(demo_assets, tmp_path / "straight", straight, sharded),
                   check=True, capture_output=True)
    expected = torch.load(straight, weights_only=True)
    assert expected["meta"]["batch_plan"]["world_size"] == 2

    stop_at = random.Random().randint(2, ITERS - 2)
    final = tmp_path / "final.pth"
    cmd = train_cmd(demo_assets, tmp_path / "work", final, sharded)
    # only rank 1 gets the signal; rank 0 (the one that logs) must stop at the same iteration
    code, out = run_until(cmd, stop_at, signal.SIGTERM, target=lambda p: rank_pid(p.pid, 1))
    assert code != 0 and "stop requested by another rank" in out, out[-2000:]
    saved = latest_valid_checkpoint(tmp_path / "work")
    assert f"saved {saved.name} at iteration" in out, "rank 0 saved where both ranks stopped"
    # the signal reaches rank 1 after rank 0 logged stop_at, while the ranks may already be
    # one iteration further than in the one-process case
    assert_saved_at_stop_and_resumes_to(cmd, tmp_path / "work", final, stop_at,
                                        expected["state_dict"], late=2)


def test_a_half_written_checkpoint_folder_is_never_the_newest_and_is_removed(tmp_path):
    """A sharded checkpoint is written into a temporary folder and renamed when every rank has
    written: a killed job leaves that temporary folder, never a folder under the checkpoint's
    name; a named folder that lost a file falls back like a damaged file. The temporary
    folder of a dead writer goes at the next start."""
    import torch.distributed.checkpoint as dcp

    from internseg.io import remove_stale_temp_files, save_torch

    def folder(name, iteration):
        path = tmp_path / name
        dcp.save({"model": {"w": torch.full((3,), float(iteration))}}, checkpoint_id=str(path))
        save_torch(path / "extra.pth", {"meta": {"iter": iteration}})
        return path

    torch.save({"state_dict": {"w": torch.zeros(3)}}, tmp_path / "iter_4.pth")  # the old layout
    folder("iter_8.pth", 8)
    partial = folder(".iter_12.pth.tmp.999999999@host.abcdefgh", 12)
    (partial / ".metadata").unlink()  # killed before rank 0 wrote the metadata
    assert latest_valid_checkpoint(tmp_path) == tmp_path / "iter_8.pth"
    (tmp_path / "iter_8.pth" / "__0_0.distcp").unlink()
    assert not is_readable_checkpoint(tmp_path / "iter_8.pth")
    assert latest_valid_checkpoint(tmp_path) == tmp_path / "iter_4.pth"
    assert remove_stale_temp_files(tmp_path, no_live_writer=True) == [partial]
    assert not partial.exists()
