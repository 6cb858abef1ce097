"""hdsu_core.workspace: the shared hierarchy's versions, imports and the audit events they record."""

from __future__ import annotations

import pytest

from hdsu_core import workspace as W
from hdsu_core.hierarchy import HierarchyError, load_default
from hdsu_core.icd10 import import_branch
from hdsu_core.store import Store


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "w.duckdb")


def test_icd10_import_is_merged_and_recorded(store):
    h, br = load_default(), import_branch("F40-F48")
    merged = W.import_icd10_branch(store, h, br, "add", actor="ann", icd_range="F40-F48")
    assert len(merged) == len(h) + len(br)
    ev = store.audit_events()
    assert list(ev["action"]) == ["import_icd10"] and list(ev["actor"]) == ["ann"]
    assert ev.iloc[0]["details"] == {"range": "F40-F48", "mode": "add", "concepts": len(br)}


def test_invalid_import_records_nothing(store):
    with pytest.raises(HierarchyError):
        W.import_icd10_branch(store, load_default(), import_branch("F40-F48"), "bogus", actor="ann", icd_range="x")
    assert store.audit_events().empty


def test_upload_is_recorded(store):
    h = load_default()
    assert W.record_upload(store, h, actor="bob", file_name="mine.json") is h
    ev = store.audit_events()
    assert list(ev["action"]) == ["upload_hierarchy"] and ev.iloc[0]["details"]["file"] == "mine.json"


def test_run_hierarchy_uses_the_run_s_version_or_says_none(store):
    h = load_default()
    h.rename("anxiety", "Anxiety disorders")
    vid = W.save_hierarchy(store, h, None, "ann", "rename")["version"]
    assert W.run_hierarchy(store, {"hierarchy_version": vid}).concept("anxiety").name == "Anxiety disorders"
    assert len(W.run_hierarchy(store, {"hierarchy_version": float("nan")})) == len(load_default())
    assert W.run_hierarchy(store, {"hierarchy_version": 99}) is None


def test_new_concept_id_avoids_taken_ids():
    h = load_default()
    assert W.new_concept_id(h, "Anxiety") == "anxiety_2"
    assert W.new_concept_id(h, "Something new") not in h
