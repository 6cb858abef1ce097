"""Where things live. Runtime state goes under ``var/`` unless ``HDSU_HOME`` says otherwise."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
DEFAULT_HIERARCHY = DATA_DIR / "hierarchy.json"
DEMO_FACTS = DATA_DIR / "demo_facts.json"
DEMO_KB = DATA_DIR / "demo_kb.jsonl"
# Real benchmark files live beside the checkout and are never copied into it.
SHARED_DATA = Path(os.environ.get("HDSU_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def home() -> Path:
    """Runtime state root (DuckDB file, model cache, job logs); created on demand."""
    root = Path(os.environ.get("HDSU_HOME", PROJECT_ROOT / "var"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def default_db() -> Path:
    return Path(os.environ.get("HDSU_DB", home() / "hdsu.duckdb"))


def model_cache() -> Path:
    p = home() / "models"
    p.mkdir(parents=True, exist_ok=True)
    return p


def jobs_dir() -> Path:
    p = home() / "jobs"
    p.mkdir(parents=True, exist_ok=True)
    return p
