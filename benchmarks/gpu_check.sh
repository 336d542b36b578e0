#!/usr/bin/env bash
# The GPU check in this project's environment (the device itself runs device_check.sh, which
# installs the carried wheels first): writes ${1:-benchmarks/gpu_check.json} and the .md
# summary beside it, which `internseg plan` reads. Under 8 minutes on one GPU (the check's
# parts share a 430 s budget; this guard stops it at 470 s). Without a GPU it runs every part
# on the tiny demo trunk (a smoke test, not a measurement).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/gpu_check.json}
python=${PYTHON:-.venv/bin/python}
size=()
"$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' || size=(--tiny)
exec timeout 470 "$python" benchmarks/gpu_check.py "${size[@]}" --out "$out" "${@:2}"
