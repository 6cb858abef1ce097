#!/usr/bin/env bash
# Device check for a machine with a CUDA GPU: the device tests, then the same demo hdsu run on
# the GPU and on the CPU, side by side (forget / retain / MIA / changed / seconds / device).
# Needs a Python whose torch is a CUDA build: PYTHON=/path/to/python (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'PYEOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA GPU (CUDA build: {torch.version.cuda}); "
             "point PYTHON at a Python with a CUDA build of torch")
print(f"gpu_check: torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
PYEOF
"$PY" -m pytest -q -p no:cacheprovider tests/test_device.py tests/test_methods.py
DB="${TMPDIR:-/tmp}/hdsu_gpu_check.duckdb"
for dev in cuda cpu; do
  "$PY" -m hdsu_core run --device "$dev" --forget anxiety --db "$DB" --json --quiet > "${TMPDIR:-/tmp}/gpu_check_$dev.json"
done
"$PY" - <<'PYEOF'
import json, os
tmp = os.environ.get("TMPDIR", "/tmp")
keys = ["forget_acc_after", "retain_acc_after", "mia_auc", "changed_fraction", "seconds", "steps"]
print("device  " + "  ".join(keys))
for dev in ("cuda", "cpu"):
    r = json.load(open(f"{tmp}/gpu_check_{dev}.json"))
    print(f"{dev:6s}  " + "  ".join(f"{r.get(k)!s:.8}" for k in keys))
PYEOF
