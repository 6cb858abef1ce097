"""Where things live. Runtime state goes under ``var/`` unless ``HDSU_HOME`` says otherwise."""

from __future__ import annotations

import os
import tempfile
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
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # one line that names the setting to change, not "[Errno 30] ..."
        raise OSError(
            f"HDSU_HOME {root} cannot be created ({e.strerror}); point HDSU_HOME at a writable directory"
        ) from None
    return root


def default_db() -> Path:
    return Path(os.environ.get("HDSU_DB", home() / "hdsu.duckdb"))


def model_cache() -> Path:
    p = home() / "models"
    p.mkdir(parents=True, exist_ok=True)
    return p


def run_models_dir() -> Path:
    """Every run's model files (receipt and sparse delta), one directory per run; ``HDSU_RUN_MODELS``
    moves them (the tests keep them in a temporary directory while sharing the model cache)."""
    p = Path(os.environ.get("HDSU_RUN_MODELS", model_cache() / "runs"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def jobs_dir() -> Path:
    p = home() / "jobs"
    p.mkdir(parents=True, exist_ok=True)
    return p


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory, fsync, then ``os.replace``: readers never see
    half a file, and a crash leaves the old file (or none) rather than a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))
