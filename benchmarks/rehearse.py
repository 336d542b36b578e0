"""Every run of a preset rehearsed at its true size (`internseg rehearse`), beside what the
plan said before traces existed.

    flock /tmp/internseg-heavy.lock python benchmarks/rehearse.py --preset paper

Traces go to benchmarks/rehearsal/<preset>/ (one per shape; those already there are reused
unless --force), where `internseg plan` reads them. Prints a markdown table per run: the
traced peak per GPU by kind, FLOPs per iteration and per validation image, host memory per
rank, and the plan's arithmetic memory and trunk-only FLOPs; --out writes the rows as JSON
with the elapsed time. `--preset demo` is the smallest size (seconds per run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from internseg.engine.rehearse import rehearse_runs
from internseg.engine.traces import KINDS, default_gpus, summary, traces_dir
from internseg.io import write_json
from internseg.plan import plan as plan_costs, trunk_flops_per_image
from internseg.registry import experiments, plan_runs, resolve_run, table15_runs

CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"


def arithmetic(preset: str, runs: dict, gpus: int) -> dict:
    """The plan's figures per run without traces: memory per GPU and the trunk-only FLOPs
    of one iteration (what it priced steps from)."""
    costs = plan_costs(runs.values(), preset, gpus, traces=None)
    out = {}
    for cost in costs:
        run = runs[cost.run]
        cfg = resolve_run(preset, run)
        # forward; backward and recompute where the trunk trains (plan.flops_seconds_...)
        passes = {"frozen": 1, "adapter": 3}.get(cost.regime, 4)
        out[cost.run] = dict(gpu_memory_gb=cost.gpu_memory_gb,
                             host_memory_gb=cost.host_memory_gb,
                             trunk_flops_per_iteration=trunk_flops_per_image(
                                 cfg.model.backbone) * passes * cfg.total_batch_size)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=["paper", "demo"], default="paper")
    p.add_argument("--force", action="store_true", help="trace again where traces exist")
    p.add_argument("--traces", type=Path, help="default: benchmarks/rehearsal/<preset>")
    p.add_argument("--out", type=Path, help="also write the rows and the time as JSON")
    args = p.parse_args(argv)

    registered = experiments(args.preset)
    # the nine rows on their own trunks and datasets, and the preset's Table 15 grid
    grid = yaml.safe_load(CONFIG.read_text())["presets"][args.preset]["table15"]
    runs = plan_runs(list(registered), registered) | table15_runs(
        registered, grid["trunks"], grid["datasets"])
    gpus = default_gpus(args.preset)
    directory = args.traces or traces_dir(args.preset)
    started = time.monotonic()
    traces = rehearse_runs(args.preset, runs.values(), gpus, directory, force=args.force)
    elapsed = time.monotonic() - started
    before = arithmetic(args.preset, runs, gpus)

    rows = []
    kinds = [k for k in KINDS if any(t.peak_by_kind.get(k) for t in traces.values())]
    print(f"| run | peak GB/GPU | {' | '.join(kinds)} | TFLOP/iteration | TFLOP/val image "
          "| host GB/rank | plan before: GB/GPU | plan before: trunk TFLOP/iteration |")
    print("|---" * (7 + len(kinds)) + "|")
    for run_id, trace in traces.items():
        row = summary(run_id, trace) | dict(before=before[run_id])
        rows.append(row)
        by_kind = " | ".join(f"{trace.peak_by_kind.get(k, 0) / 1e9:.2f}" for k in kinds)
        trunk = before[run_id]["trunk_flops_per_iteration"]
        print(f"| {run_id} | {trace.peak_bytes / 1e9:.2f} ({trace.peak_phase}) | {by_kind} | "
              f"{trace.flops_per_iteration / 1e12:.0f} | {trace.flops_per_val_image / 1e12:.1f} | "
              f"{trace.host_bytes / 1e9:.1f} | {before[run_id]['gpu_memory_gb']} | "
              f"{trunk / 1e12:.0f} |")
    shapes = len({t.shape_key for t in traces.values()})
    print(f"\n{len(traces)} runs, {shapes} shapes, {elapsed:.0f} s", file=sys.stderr)
    if args.out:
        write_json(args.out, dict(preset=args.preset, gpus=gpus, seconds=round(elapsed, 1),
                                  shapes=shapes, runs=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
