"""The Models page, the "start from" choice on the Unlearn page and the model downloads of the
Compare and Audit pages (AppTest), on real runs of the cached demo model (two-step gradient ascent,
database in a temporary file)."""

from __future__ import annotations

import pytest
from test_app import app

from hdsu_core.artifacts import run_models as RM
from hdsu_core.engine import RunConfig
from hdsu_core.lifecycle import create_run, execute_run
from hdsu_core.store import Store

QUICK = {"method": "grad_ascent", "settings": {"max_steps": 2}, "n_generations": 2}


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    monkeypatch.setenv("HDSU_DB", str(tmp_path / "h.duckdb"))  # the model cache stays shared
    return Store()


def quick_run(store: Store, forget: list[str], **kw) -> str:
    run_id = create_run(store, RunConfig(forget=forget, **QUICK, **kw), author="alice")
    execute_run(store, run_id, executor="cli")
    return run_id


@pytest.fixture
def chain(store) -> tuple[str, str]:
    run1 = quick_run(store, ["anxiety"])
    return run1, quick_run(store, ["depression"], from_run=run1)


def test_models_page_shows_the_lineage_and_deletes_files(store, chain):
    run1, run2 = chain
    at = app("models", {"actor": "carol"})
    table = at.dataframe[0].value
    names = list(table["model"])
    assert names[0].startswith("📦 ") and "demo-" in names[0]
    i1 = next(i for i, n in enumerate(names) if run1 in n)
    i2 = next(i for i, n in enumerate(names) if run2 in n)
    assert i2 == i1 + 1 and len(names[i2]) > len(names[i1])  # run 2 is drawn under run 1
    assert at.selectbox(key="models_run").value == run2  # the newest first
    lineage = " ".join(m.value for m in at.markdown)
    assert lineage.index(run1) < lineage.index(run2)
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Unlearned model (zip)", "Sparse delta", "Receipt (JSON)"]

    at.selectbox(key="models_run").set_value(run1).run()
    at.checkbox(key=f"del_sure_{run1}").check().run()
    at.button(key=f"del_{run1}").click().run()
    assert any(run2 in e.value for e in at.error)  # run 2 still needs run 1's files
    assert not RM.get_run_model(store, run1).files_deleted

    at.selectbox(key="models_run").set_value(run2).run()
    at.checkbox(key=f"del_sure_{run2}").check().run()
    at.button(key=f"del_{run2}").click().run()
    assert any("receipt of " + run2 in s.value for s in at.success)
    assert RM.get_run_model(store, run2).files_deleted
    ev = store.audit_events(run_id=run2)
    assert ((ev.action == "model_files_deleted") & (ev.actor == "carol")).any()


def test_unlearn_page_can_start_from_an_earlier_run(store, chain):
    run1, run2 = chain
    at = app("unlearn")
    options = at.selectbox(key="from_run").options
    assert options[0] == "the original model"
    assert any(run1 in o for o in options) and any(run2 in o for o in options)


def test_compare_and_audit_offer_the_model_downloads(store):
    run1 = quick_run(store, ["anxiety"])
    for page in ("compare", "audit"):
        at = app(page, {"compare_run": run1, "audit_run": run1})
        labels = [b.label for b in at.get("download_button")]
        assert {"Unlearned model (zip)", "Sparse delta", "Receipt (JSON)"} <= set(labels), page
    at = app("audit", {"audit_run": run1})
    assert any("Model output" in s.value for s in at.subheader)
