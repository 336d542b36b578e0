#!/usr/bin/env bash
# One prepared GPU check, under 8 minutes on one GPU: trunk step per regime (time, memory,
# TFLOP/s, SDPA kernel), one sharded few-shot step, slide-inference throughput. Writes
# ${1:-benchmarks/gpu_check.json}, which `internseg plan` reads. On a machine without a GPU
# it runs the same code on the tiny demo trunk (a smoke test, not a measurement).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/gpu_check.json}
python=${PYTHON:-.venv/bin/python}
size=()
"$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' || size=(--tiny)
exec timeout 470 "$python" benchmarks/gpu_check.py "${size[@]}" --out "$out" "${@:2}"
