"""What a run leaves on disk: said at its end, temporary files of killed writers removed,
superseded work dirs kept to a number and listed or removed by `internseg clean`, and a log
that a second trainer cannot truncate."""

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from internseg.cli import main
from internseg.engine import disk
from internseg.engine.identity import work_dir_lock
from internseg.io import TEMP_NAME, _HOST, check_output_file, stale_temp_files
from internseg.locks import HOST

BIN = Path(sys.executable).parent


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_temporary_files_of_dead_writers_are_removed(tmp_path):
    names = {
        "dead": f".final.pth.tmp.{dead_pid()}@{_HOST}.abcdefgh.pth",
        "alive": f".final.pth.tmp.{os.getpid()}@{_HOST}.abcdefgh.pth",
        "other host": f".final.pth.tmp.{dead_pid()}@elsewhere.abcdefgh.pth",
        "no pid (older)": ".final.pth.tmp.abcdefgh.pth",
        "another output": f".scalars.jsonl.tmp.{dead_pid()}@{_HOST}.abcdefgh.jsonl",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"half")
    assert all(TEMP_NAME.match(name) for name in names.values())
    check_output_file(tmp_path / "final.pth", "--final-checkpoint")
    left = {p.name for p in tmp_path.iterdir()}
    assert left == set(names.values()) - {names["dead"]}
    # holding the lock every writer of the folder takes (a work dir), all of them are dead
    assert {p.name for p in stale_temp_files(tmp_path, no_live_writer=True)} == left


def test_a_writer_killed_mid_file_leaves_a_temporary_file_that_is_then_stale(tmp_path):
    out = tmp_path / "final.pth"
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom internseg.io import atomic_path\n"
         f"with atomic_path({str(out)!r}) as tmp:\n    tmp.write_bytes(b'x' * 1000)\n"
         "    print('writing', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    (temp,) = [p for p in tmp_path.iterdir() if TEMP_NAME.match(p.name)]
    assert stale_temp_files(tmp_path) == [], "its writer is alive"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert stale_temp_files(tmp_path) == [temp] and not out.exists()


def superseded(work: Path, identity: str, stamp: str, size: int) -> Path:
    old = work.with_name(f"{work.name}.superseded-{identity}-{stamp}")
    old.mkdir(parents=True)
    (old / "iter_4.pth").write_bytes(b"\0" * size)
    return old


def train_args(demo_assets, tmp_path, *extra):
    split = tmp_path / "split.txt"
    split.write_text("".join(f"ADE_train_{i:08d}\n" for i in range(1, 9)))
    return ["train", "demo/linear_probing", "--work-dir", str(tmp_path / "work"),
            "--data-root", str(demo_assets["data_root"]), "--split", str(split),
            "--pretrained", str(demo_assets["weights"]), "--seed", "0", "--threads", "2",
            "--final-checkpoint", str(tmp_path / "final.pth"),
            "--cfg-options", "train_cfg.max_iters=1", "default_hooks.checkpoint.interval=1",
            *extra]


def test_a_run_gives_back_what_killed_writers_and_old_superseded_runs_left_and_says_what_it_keeps(
        demo_assets, tmp_path, caplog):
    work = tmp_path / "work"
    aside = [superseded(work, "a" * 12, f"2024010{day}-120000", 1000) for day in (1, 2, 3)]
    work.mkdir()
    leftover = work / ".iter_2.pth.tmp.abcdefgh.pth"  # an older trainer killed mid-save
    leftover.write_bytes(b"half")
    caplog.set_level(logging.INFO, logger="internseg")
    assert main(train_args(demo_assets, tmp_path)) == 0
    assert not leftover.exists()
    # the newest superseded work dir is kept (--keep-superseded 1), the older ones removed
    assert [p.exists() for p in aside] == [False, False, True]
    said = [r.message for r in caplog.records if r.message.startswith("on disk for this run")]
    assert len(said) == 1, said
    assert f"work dir {work} " in said[0] and "iter_1.pth " in said[0] and " kB" in said[0]
    assert f"{tmp_path / 'final.pth'} " in said[0]
    assert f"superseded {aside[2]} 1.0 kB" in said[0] and "total " in said[0]
    assert all(f"removing {p} (1.0 kB): superseded work dir beyond the newest 1" in caplog.text
               for p in aside[:2])


def test_clean_lists_then_removes_superseded_work_dirs_and_stale_temporary_files(tmp_path,
                                                                                  capsys):
    root = tmp_path / "work"
    run = root / "demo" / "ade20k" / "tiny" / "head_tuning"
    old = superseded(run, "b" * 12, "20240101-120000", 3_000_000)
    new = superseded(run, "c" * 12, time.strftime("%Y%m%d-%H%M%S"), 2_000_000)
    stale = run.parent / f".final.pth.tmp.{dead_pid()}@{_HOST}.abcdefgh.pth"
    stale.write_bytes(b"\0" * 500)
    assert main(["clean", "--work-root", str(root)]) == 0
    listed = capsys.readouterr().out
    assert f"superseded {old}: 3.0 MB" in listed and f"superseded {new}: 2.0 MB" in listed
    assert f"temporary file of a dead writer {stale}: 500 B" in listed
    assert "would remove (--remove): 5.0 MB" in listed
    assert old.exists() and new.exists() and stale.exists()

    assert main(["clean", "--work-root", str(root), "--remove", "--older-than", "30"]) == 0
    assert not old.exists() and new.exists() and not stale.exists()
    with work_dir_lock(run):  # a run being trained: its superseded dirs are left alone
        assert main(["clean", "--work-root", str(root), "--remove"]) == 0
        assert f"skipping {run}: {run} is in use" in capsys.readouterr().out
    assert new.exists()
    assert main(["clean", "--work-root", str(root), "--remove", "--keep", "1"]) == 0
    assert new.exists()
    assert main(["clean", "--work-root", str(root), "--remove"]) == 0
    assert not new.exists()
    assert main(["clean", "--work-root", str(tmp_path / "nowhere")]) == 2


def test_retention_spares_the_run_starting_says_what_goes_first_and_never_follows_a_link(
        tmp_path, monkeypatch, capsys, caplog):
    work = tmp_path / "work"
    own = superseded(work, "a" * 12, "20240101-120000", 1000)  # the identity starting, oldest
    older, newer = (superseded(work, tag * 12, f"2024010{day}-120000", 1000)
                    for tag, day in (("b", 2), ("c", 3)))
    # what versions that did not follow a linked work dir left: the link itself moved aside
    scratch = tmp_path / "scratch" / "work"
    scratch.mkdir(parents=True)
    (scratch / "iter_4.pth").write_bytes(b"\0" * 1000)
    linked = work.with_name(f"{work.name}.superseded-{'d' * 12}-20231231-120000")
    linked.symlink_to(scratch)
    said_first = []
    rmtree = shutil.rmtree
    monkeypatch.setattr(disk.shutil, "rmtree", lambda path: (
        said_first.append(f"removing {path} (1.0 kB): superseded work dir" in caplog.text),
        rmtree(path)))
    caplog.set_level(logging.INFO, logger="internseg")
    assert disk.prune_superseded(work, 1, "a" * 64) == [older, linked]
    assert own.is_dir() and newer.is_dir() and not older.exists() and said_first == [True]
    assert not os.path.lexists(linked) and (scratch / "iter_4.pth").is_file()
    assert f"removing {linked}, a link to {scratch} (left where it is" in caplog.text

    # `internseg clean --remove` unlinks such a link too, and lists it first as one
    linked.symlink_to(scratch)
    assert main(["clean", "--work-root", str(tmp_path)]) == 0
    assert f"superseded {linked}: a link to {scratch}, " in capsys.readouterr().out
    assert main(["clean", "--work-root", str(tmp_path), "--remove"]) == 0
    assert not os.path.lexists(linked) and (scratch / "iter_4.pth").is_file()
    assert not own.exists() and not newer.exists()


CLEAN_SLOWLY = """
import sys, time
from internseg.cli import main
from internseg.engine import disk
from internseg.engine import disk

def slowly(path, why, report):
    print("removing", path, flush=True)
    time.sleep(120)

disk.remove_entry = slowly
sys.argv = sys.argv[1:]  # as the console script sees them
main(sys.argv[1:])
"""


def test_a_trainer_refused_beside_internseg_clean_says_it_is_internseg_clean(
        demo_assets, tmp_path, capsys):
    work = tmp_path / "work"
    superseded(work, "b" * 12, "20240101-120000", 1000)
    clean = subprocess.Popen([sys.executable, "-c", CLEAN_SLOWLY, str(BIN / "internseg"),
                              "clean", "--work-root", str(tmp_path), "--remove"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert clean.stdout.readline().startswith("removing ")  # holding the work dir's lock
        assert main(train_args(demo_assets, tmp_path)) == 2
    finally:
        clean.kill()
        clean.wait()
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert said == (f"internseg train: error: {work} is in use by `internseg clean --work-root "
                    f"{tmp_path} --remove` (pid {clean.pid} on {HOST}) (lock "
                    f"{tmp_path / '.work.lock'}); wait for it or stop it")


def test_a_second_trainer_on_a_running_run_leaves_its_log_intact(demo_assets, tmp_path):
    """The trainer opens its log only once it holds the work dir; a shell's `> train.log`
    truncated it before the second trainer was even refused."""
    log = tmp_path / "train.log"
    log.write_text("an earlier attempt\n")
    args = train_args(demo_assets, tmp_path, "train_cfg.max_iters=2000",
                      "default_hooks.logger.interval=1", "--log-file", str(log))
    cmd = [str(BIN / "internseg"), *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(tmp_path / "first.launch.log", "w") as launch:
        first = subprocess.Popen(cmd, stdout=launch, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while "==== " not in log.read_text():  # the first holds the work dir
            assert first.poll() is None and time.monotonic() < deadline, (
                (tmp_path / "first.launch.log").read_text()[-2000:])
            time.sleep(0.1)
        before = log.read_text()
        second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert second.returncode == 2
        said = second.stderr.splitlines()[-1]
        assert f"{tmp_path / 'work'} is in use by `internseg train demo/linear_probing " in said
        assert f"(pid {first.pid} on " in said
        assert log.read_text().startswith(before), "the first trainer's log was cut"
        assert log.read_text().count("==== ") == 1 and "is in use" not in log.read_text()
        while "Iter(train)" not in log.read_text():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        first.send_signal(signal.SIGTERM)  # checkpoints, exits 75
        assert first.wait(timeout=300) == 75
    text = log.read_text()
    assert text.startswith("an earlier attempt\n==== ") and "internseg train demo/" in text
    assert "stop requested by SIGTERM" in text and "on disk for this run" in text
    assert f"output continues in {log}" in (tmp_path / "first.launch.log").read_text()


@pytest.mark.parametrize("size,shown", [(999, "999 B"), (1500, "1.5 kB"), (2_500_000, "2.5 MB"),
                                        (7_300_000_000, "7.3 GB")])
def test_sizes_read_as_people_write_them(size, shown):
    from internseg.engine.disk import human

    assert human(size) == shown
