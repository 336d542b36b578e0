"""The GPU check (benchmarks/gpu_check.py): its budget, its decisions on synthetic
measurements, and its CPU smoke run through every part."""

import json
import subprocess
import sys
import time

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from check_report import TOLERANCE, Budget, PartTimeout, decide, markdown  # noqa: E402


def measured(**changes) -> dict:
    """An H100 report as gpu_check.py writes it, measurements made up."""
    report = dict(
        device="NVIDIA H100 80GB HBM3", device_memory_gib=79.2, torch="2.11.0+cu130",
        tiny=False, sdpa_kernel="flash_attention", tolerance=dict(max_rel_error=TOLERANCE),
        sdpa=[dict(backend="flash_attention", status="ok", seconds_fwd_bwd=0.010),
              dict(backend="efficient_attention", status="ok", seconds_fwd_bwd=0.0099),
              dict(backend="cudnn_attention", status="ok", seconds_fwd_bwd=0.008),
              dict(backend="math", status="ok", seconds_fwd_bwd=0.05)],
        trunk=[dict(regime="frozen", seconds_per_iter=0.1),
               dict(regime="trained_master", seconds_per_iter=0.5),
               dict(regime="trained_bf16", seconds_per_iter=0.4)],
        checkpointing=[dict(regime="trained_master", status="out of memory"),
                       dict(regime="trained_bf16", status="ok", seconds_per_iter=0.3,
                            peak_memory_gib=50.0)],
        compile=[dict(regime="trained_master", status="ok", speedup=1.3, compile_seconds=40),
                 dict(regime="frozen", status="ok", speedup=1.06, compile_seconds=20)],
        checks=[dict(check="adapter_amp_step", optim_wrapper="GradNormAmpOptimWrapper",
                     amp=True, status="ok")])
    report.update(changes)
    return report


def test_the_fastest_backend_that_passed_is_pinned_when_clearly_faster():
    sdpa = decide(measured())["sdpa_backend"]
    assert (sdpa["backend"], sdpa["pin"]) == ("cudnn_attention", True)


def test_a_backend_that_failed_its_check_or_is_within_noise_is_not_chosen():
    rows = measured()["sdpa"]
    rows[2] = dict(backend="cudnn_attention", status="mismatch", max_rel_error=0.2)
    sdpa = decide(measured(sdpa=rows))["sdpa_backend"]
    # efficient is 1.01x flash: the dispatcher's own pick stays
    assert (sdpa["backend"], sdpa["pin"]) == ("flash_attention", False)


def test_the_dispatchers_pick_unmeasured_pins_the_best_that_passed():
    rows = [dict(backend="flash_attention", status="unsupported"),
            dict(backend="math", status="ok", seconds_fwd_bwd=0.05)]
    sdpa = decide(measured(sdpa=rows))["sdpa_backend"]
    assert (sdpa["backend"], sdpa["pin"]) == ("math", True)


def test_checkpointing_goes_off_only_where_it_fits_and_pays():
    choice = decide(measured())["activation_checkpointing"]
    assert choice["trained_master"]["use"] is True  # ran out of memory without it
    assert choice["trained_bf16"]["use"] is False  # 50 GiB of 79.2, 1.33x
    tight = [dict(regime="trained_bf16", status="ok", seconds_per_iter=0.3,
                  peak_memory_gib=70.0)]
    assert decide(measured(checkpointing=tight))["activation_checkpointing"][
        "trained_bf16"]["use"] is True
    no_gain = [dict(regime="trained_bf16", status="ok", seconds_per_iter=0.39,
                    peak_memory_gib=50.0)]
    assert decide(measured(checkpointing=no_gain))["activation_checkpointing"][
        "trained_bf16"]["use"] is True
    on_cpu = measured(device_memory_gib=None, checkpointing=[
        dict(regime="trained_bf16", status="ok", seconds_per_iter=0.1, peak_memory_gib=None)])
    assert decide(on_cpu)["activation_checkpointing"]["trained_bf16"]["use"] is True


def test_compile_is_used_per_regime_above_its_threshold_and_only_if_it_passed():
    choice = decide(measured())["compile"]
    assert choice["trained_master"]["use"] is True and choice["frozen"]["use"] is False
    failed = [dict(regime="trained_master", status="mismatch", compile_seconds=40)]
    assert decide(measured(compile=failed))["compile"]["trained_master"]["use"] is False


def test_amp_is_reported_as_it_ran():
    assert decide(measured())["adapter_amp_fp16"] == "works"
    broken = [dict(check="adapter_amp_step", amp=True, status="mismatch")]
    assert decide(measured(checks=broken))["adapter_amp_fp16"] == "fails: mismatch"
    cpu = [dict(check="adapter_amp_step", amp=False, status="ok",
                optim_wrapper="GradNormOptimWrapper")]
    assert decide(measured(checks=cpu))["adapter_amp_fp16"].startswith("not run")


def test_nothing_measured_decides_the_defaults():
    empty = decide(dict(device="cpu", tiny=True))
    assert empty == dict(sdpa_backend=dict(backend=None, pin=False, reason=
                                           "no backend measured ok: keep the default"),
                         compile={}, activation_checkpointing={}, adapter_amp_fp16="not run")


def test_a_part_that_does_not_fit_is_skipped_unrun():
    report, ran = {}, []
    budget = Budget(10, report)
    assert budget.run("big", 60, ran.append, 1) is None
    assert ran == [] and report["skipped"] == [
        dict(part="big", reason="needs up to 60 s, 10 s of the 10 s budget left")]


def test_a_part_past_its_budget_is_stopped_and_keeps_its_rows():
    report, rows, cleaned = {}, [], []

    def slow():
        rows.append("measured")
        time.sleep(30)

    budget = Budget(60, report, cleanup=lambda: cleaned.append(True))
    start = time.monotonic()
    assert budget.run("slow", 1, slow) is None
    assert time.monotonic() - start < 5
    assert rows == ["measured"] and cleaned == [True]
    assert report["skipped"][0]["part"] == "slow"
    assert "stopped at its 1 s budget" in report["skipped"][0]["reason"]


def test_a_timeout_that_comes_back_wrapped_still_counts_as_one():
    report = {}

    def compiling():
        try:
            time.sleep(30)
        except PartTimeout as err:
            raise RuntimeError("backend compiler failed") from err

    assert Budget(60, report).run("compile", 1, compiling) is None
    assert report["failed"] == [] and report["skipped"][0]["part"] == "compile"


def test_a_part_that_raises_is_named_and_the_next_still_runs():
    report = {}
    budget = Budget(60, report)

    def broken():
        raise ValueError("no kernel\nsecond line")

    assert budget.run("broken", 5, broken) is None
    assert budget.run("fine", 5, lambda: 42) == 42
    assert report["failed"] == [dict(part="broken", error="ValueError: no kernel")]


def test_the_summary_states_the_decisions_and_what_was_skipped():
    report = measured(skipped=[dict(part="compile/frozen", reason="about 80 s to compile")],
                      budget_s=450, elapsed_s=300)
    report["decisions"] = decide(report)
    text = markdown(report)
    assert "- sdpa_backend: backend cudnn_attention, pin True" in text
    assert "- activation_checkpointing / trained_bf16: use False" in text
    assert "- compile/frozen: about 80 s to compile" in text


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One CPU smoke run of the whole check on the tiny trunk, through gpu_check.sh."""
    out = tmp_path_factory.mktemp("check") / "gpu_check.json"
    subprocess.run(["bash", str(REPO / "benchmarks/gpu_check.sh"), str(out), "--iters", "1",
                    "--img-size", "56"], check=True, capture_output=True, timeout=600,
                   env={**__import__("os").environ, "PYTHON": sys.executable})
    return json.loads(out.read_text()), out.with_suffix(".md").read_text()


def test_gpu_check_smoke_runs_on_cpu_and_writes_what_plan_reads(smoke):
    report, _ = smoke
    assert report["tiny"] is True and report["device"] == "cpu"
    assert report["sdpa_kernel"] != "none"
    assert [r["regime"] for r in report["trunk"]] == ["frozen", "trained_master",
                                                     "trained_bf16"]
    assert all(r["seconds_per_iter"] > 0 and r["tflops_per_s"] > 0 for r in report["trunk"])
    # the rehearsal's trace of each step beside the GPU's measured peak (none on a CPU)
    assert all(r["traced_peak_memory_gib"] > 0 and r["traced_minus_measured_gib"] is None
               for r in report["trunk"])
    traced = {r["regime"]: r["traced_peak_memory_gib"] for r in report["trunk"]}
    assert traced["trained_master"] > traced["frozen"]  # fp32 masters, gradients
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["sharded_fewshot_step"]["seconds_per_step"] > 0
    assert checks["slide_inference"]["images_per_s"] > 0


def test_gpu_check_smoke_runs_every_part_and_checks_every_variant(smoke):
    report, summary = smoke
    assert report["failed"] == []
    # AMP is the one thing a CPU cannot run; the step ran with the demo's wrapper
    assert [s["part"] for s in report["skipped"]] == ["adapter_amp/fp16"]
    sdpa = {r["backend"]: r for r in report["sdpa"]}
    assert sdpa["math"]["status"] == "ok" and sdpa["math"]["max_rel_error"] <= TOLERANCE
    assert {r["status"] for r in sdpa.values()} <= {"ok", "unsupported"}
    for rows in (report["checkpointing"], report["compile"]):
        assert rows and all(r["status"] == "ok" and r["max_rel_error"] <= TOLERANCE
                            for r in rows)
    assert [r["regime"] for r in report["checkpointing"]] == ["trained_master", "trained_bf16"]
    assert [(r["regime"], r["backend"]) for r in report["compile"]] == [
        ("trained_master", "aot_eager"), ("frozen", "aot_eager")]
    adapter = next(c for c in report["checks"] if c["check"] == "adapter_amp_step")
    assert adapter["status"] == "ok" and adapter["amp"] is False
    assert report["decisions"] == decide(report)
    assert set(report["part_seconds"]) == {"sdpa", "trunk", "slide_inference", "adapter_amp",
                                           "compile", "sharded_fewshot"}
    assert "## Decisions" in summary and "adapter_amp/fp16" in summary


def test_the_device_command_says_what_is_missing_at_once(tmp_path):
    """No wheels carried (pip: "Invalid wheel filename '*'"), an interpreter without torch
    (ModuleNotFoundError), no GPU (the full-size parts ran 391 s on the CPU, then exit 0):
    one line each, exit 2, before anything runs."""
    import os

    no_torch = tmp_path / "python"
    no_torch.write_text(f"#!/bin/sh\nexec {sys.executable} -I -S \"$@\"\n")
    no_torch.chmod(0o755)
    (tmp_path / "whl").mkdir()
    (tmp_path / "whl" / "internseg-0-py3-none-any.whl").touch()
    env = {**os.environ, "OUT": str(tmp_path)}
    for changes, said in (
            (dict(WHEELS=str(tmp_path)), f"no wheels in {tmp_path}/: run `make device-wheels`"),
            (dict(WHEELS=str(tmp_path / "whl"), PYTHON=str(no_torch)),
             f"{no_torch} has no torch: run this on the device")):
        done = subprocess.run(["bash", str(REPO / "benchmarks/device_check.sh")], timeout=60,
                              capture_output=True, text=True, env={**env, **changes})
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert said in done.stderr, done.stderr
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--out",
                           str(tmp_path / "gpu_check.json")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2 and "gpu_check.py: no CUDA GPU on " in done.stderr, done.stderr
    assert "pass --tiny for the CPU smoke test" in done.stderr
    assert time.perf_counter() - started < 60 and not (tmp_path / "gpu_check.json").exists()
