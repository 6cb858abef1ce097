#!/usr/bin/env bash
# Run the whole test suite: prepares .venv like scripts/run_app.sh, makes sure Chromium is there
# for the browser test, then runs pytest. Extra arguments go to pytest, e.g.
#   scripts/run_tests.sh tests/test_browser.py -x
# Defaults (quiet, per-test timeout) come from pytest.ini.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/run_app.sh --setup-only

CHROMIUM="${HDSU_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
    if [ -z "${HDSU_CHROMIUM:-}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing Chromium for the browser test (apt-get)…"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core fonts-noto-color-emoji >/dev/null
    else
        echo "warning: Chromium not found at $CHROMIUM: tests/test_browser.py will be skipped." >&2
        echo "         Install it (Debian/Ubuntu: sudo apt-get install chromium) or set HDSU_CHROMIUM=/path/to/chromium." >&2
    fi
fi

exec .venv/bin/python -m pytest "$@"
