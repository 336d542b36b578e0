"""Every benchmark script runs: each at its smallest size, as a subprocess, as a user runs it.

A benchmark that no test runs rots (benchmarks/startup.py stopped at a renamed argument of
build_train_config and nobody saw it). Here: startup.py, backbone_step.py and
checkpoint_write.py (two gloo ranks). The GPU check (gpu_check.sh, gpu_check.py,
check_report.py) has its smoke run in tests/test_gpu_check.py; the device command and its
wheels (device_check.sh, device_wheels.py) need PyPI and run in tests/test_device_wheels.py
(make test-all).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO


def run_script(*args: str, timeout: int = 120) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO / "core"))
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_startup_reaches_the_first_iteration_on_the_tiny_trunk(tmp_path):
    out = tmp_path / "startup.json"
    run_script("benchmarks/startup.py", "--work", str(tmp_path / "work"), "--tiny",
               "--out", str(out))
    report = json.loads(out.read_text())
    steps = [row["step"] for row in report["job"]]
    assert steps[0] == "config load" and steps[-1].startswith("first batch")
    assert "pretrained trunk read and loaded" in steps
    assert report["cold_read"]["bytes"] > 0 and report["start_s"] > 0
    assert report["start_over_read"] > 0
    # the written trunk file is the benchmark's own scratch: gone afterwards
    assert not list((tmp_path / "work").glob("*.pth"))


def test_backbone_step_runs_every_regime_on_the_tiny_trunk():
    stdout = run_script("benchmarks/backbone_step.py", "--tiny", "--iters", "1", "--warmup", "0",
                        "--img-size", "112")
    rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert [row.get("regime") for row in rows[1:]] == ["frozen", "trained_master", "trained_bf16"]
    assert all(row["seconds_per_iter"] > 0 for row in rows[1:])


def test_checkpoint_write_compares_both_layouts_on_two_ranks(tmp_path):
    out = tmp_path / "checkpoint_write.json"
    run_script("benchmarks/checkpoint_write.py", "--work", str(tmp_path / "work"),
               "--param-mib", "4", "--out", str(out))
    report = json.loads(out.read_text())
    assert report["ranks"] == 2
    rows = {row["variant"]: row for row in report["rows"]}
    assert set(rows) == {"gathered", "sharded"}
    # the same state on disk either way: 12 bytes per parameter, and little besides
    for row in rows.values():
        assert row["disk_gib"] >= report["state_gib"] and row["seconds"] > 0
        assert len(row["peak_rss_above_start_gib_per_rank"]) == 2
    assert not list((tmp_path / "work").iterdir())  # every written checkpoint deleted
