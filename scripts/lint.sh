#!/usr/bin/env bash
# Lint and type-check with the tools pinned in requirements.txt (installed in .venv):
#   ruff check .   ruff format --check .   mypy hdsu_core
# Runs every step, prints which one failed, exits non-zero when any did. Settings: pyproject.toml.
# Prepare .venv first (scripts/run_app.sh --setup-only); CI (.ci/run) runs this before the tests.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=.venv/bin
for tool in ruff mypy; do
    if [ ! -x "$BIN/$tool" ]; then
        echo "lint: error: $BIN/$tool not found; run: bash scripts/run_app.sh --setup-only" >&2
        exit 2
    fi
done

failed=()
step() {
    local name="$1"
    shift
    echo "lint: $name"
    if ! "$@"; then
        echo "lint: FAILED: $name" >&2
        failed+=("$name")
    fi
}

step "ruff check ." "$BIN/ruff" check .
step "ruff format --check ." "$BIN/ruff" format --check .
step "mypy hdsu_core" "$BIN/mypy" hdsu_core

if [ ${#failed[@]} -gt 0 ]; then
    echo "lint: ${#failed[@]} step(s) failed:" >&2
    printf 'lint:   - %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "lint: all steps passed"
