#!/usr/bin/env bash
# The device command: installs the carried wheels (.whl/, from `make device-wheels`) into a
# target folder beside the image's own torch, checks that the carried internseg is this
# tree's, and runs the GPU check under its 8-minute guard. Results go to $OUT:
# gpu_check.json, gpu_check.md and gpu_check.log. Arguments go to gpu_check.py.
#   device run, carry [".whl"]:  bash benchmarks/device_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
site=${SITE:-/tmp/site}
wheels=${WHEELS:-.whl}
out=${OUT:?set OUT to the folder the results go to}
# what is missing, in one line each, where pip said "Invalid wheel filename '*'" and python
# raised ModuleNotFoundError
shopt -s nullglob
carried=("$wheels"/*.whl)
if ((${#carried[@]} == 0)); then
    echo "device_check.sh: no wheels in $wheels/: run \`make device-wheels\` here and carry" \
        ".whl to the device" >&2
    exit 2
fi
if ! "$python" -c 'import torch' 2>/dev/null; then
    echo "device_check.sh: $python has no torch: run this on the device, whose image holds" \
        "it, or set PYTHON to an interpreter that has it" >&2
    exit 2
fi
# --ignore-requires-python: internseg declares the project's 3.11; the device has 3.12
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --ignore-requires-python --target "$site" "${carried[@]}"
export PYTHONPATH="$site"
"$python" - <<'PY'
import filecmp
import sys
from pathlib import Path

import internseg

installed, tree = Path(internseg.__file__).parent, Path("core/internseg")


def differs(path: Path) -> bool:
    copy = installed / path.relative_to(tree)
    return not copy.is_file() or not filecmp.cmp(path, copy, shallow=False)


stale = [str(p) for p in sorted(tree.rglob("*.py")) if differs(p)]
if stale:
    sys.exit(f"{installed}: the carried internseg wheel is not this tree's ({stale[0]} and "
             f"{len(stale) - 1} more differ); run `make device-wheels` and carry .whl again")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
timeout 470 "$python" -u benchmarks/gpu_check.py --out "$out/gpu_check.json" "$@" 2>&1 \
    | tee "$out/gpu_check.log"
