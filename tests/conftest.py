"""Shared pytest fixtures.

Real benchmark files live beside the checkout in ``../shared/data`` (override with
``HDSU_SHARED_DATA``); they are never copied into the repository. Tests that need them skip
with a clear message when they are absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hdsu_core import paths

SHARED = paths.SHARED_DATA
SOURCES_HINT = "see ../shared/data/SOURCES.md"


def _real_file(relative: str, name: str) -> Path:
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(f"real {name} file not found at {path}; {SOURCES_HINT}")
    return path


@pytest.fixture(scope="session", autouse=True)
def _run_models_in_tmp(tmp_path_factory):
    """Runs write their model files (sparse delta, receipt); keep those of the tests out of var/
    (the model cache itself stays shared, so the demo model is built once)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HDSU_RUN_MODELS", str(tmp_path_factory.mktemp("run_models")))
    mp.setenv("HDSU_KEY_DIR", str(tmp_path_factory.mktemp("keys") / "keys"))  # a signing key of their own
    yield
    mp.undo()


# --- real data sets ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def medmcqa_dev() -> Path:
    """MedMCQA validation sample (2,957 questions, JSONL, cop 0-based)."""
    return _real_file("medmcqa/dev.jsonl", "MedMCQA")


@pytest.fixture(scope="session")
def mhqa_gold() -> Path:
    """MHQA gold CSV (1,758 rows; PubMed ids repeat)."""
    return _real_file("mhqa/mhqa_gold.csv", "MHQA gold")


@pytest.fixture(scope="session")
def mhqa_b() -> Path:
    """MHQA-B (silver) validation CSV (4,981 rows; option number written as a float)."""
    return _real_file("mhqa/mhqa_b_val.csv", "MHQA-B")
