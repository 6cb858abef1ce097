"""Dashboard tests: hdsu_core.dashboard views, hdsu_core.workspace and every page through streamlit's AppTest.

Each test points HDSU_HOME at a fresh temporary directory before any Store is created. No
unlearning runs inside AppTest: the launch test starts a real worker and cancels it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
from hierarchy_helpers import synthetic_hierarchy
from streamlit.testing.v1 import AppTest

from hdsu_core import dashboard as D
from hdsu_core import jobs, paths
from hdsu_core import workspace as W
from hdsu_core.attack_targets import ATTACK_LABELS
from hdsu_core.compute import available_devices
from hdsu_core.datasets import load
from hdsu_core.hierarchy import Hierarchy, HierarchyError, load_default
from hdsu_core.icd10 import import_branch
from hdsu_core.methods import get_method
from hdsu_core.store import Store
from hdsu_core.tagging import make_split

APP = str(paths.PROJECT_ROOT / "app.py")
PAGES = ["overview", "hierarchy", "unlearn", "runs", "compare", "compare_runs", "benchmarks", "models", "audit"]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HDSU_HOME", str(tmp_path))
    monkeypatch.delenv("HDSU_DB", raising=False)
    return tmp_path


@pytest.fixture
def store(home) -> Store:
    return Store()


def app(page: str | None = None, state: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    for k, v in (state or {}).items():
        at.session_state[k] = v
    at.run()
    if page and page != "overview":
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def seed_run(store: Store, run_id: str = "r-seeded", forget=("anxiety",)) -> dict:
    """A finished run with realistic probe rows, metrics and generations."""
    h = load_default()
    items = load("demo").items
    split = make_split(items, h, list(forget))
    store.create_run(
        run_id,
        author="tester",
        method="hdsu",
        model="demo",
        dataset="demo",
        forget_concepts=list(forget),
        config={"forget": list(forget), "method": "hdsu"},
    )
    store.set_status(run_id, "running")
    sid = split.split_of()
    rows_b, rows_a = [], []
    for i, it in enumerate(items):
        part = {"holdout_retain": "holdout"}.get(sid[it.id], sid[it.id])
        cid = split.tags[it.id].concept_id or ""
        rows_b.append(
            {
                "item_id": it.id,
                "split": part,
                "concept_id": cid,
                "correct": part != "holdout" or i % 3 == 0,
                "pred": it.answer,
                "answer": it.answer,
                "loss": 0.2 + (i % 7) / 10,
                "mink": 0.1,
            }
        )
        lost = part == "forget" and i % 5 != 0
        rows_a.append(
            {
                "item_id": it.id,
                "split": part,
                "concept_id": cid,
                "correct": (not lost) and (part != "holdout" or i % 3 == 0),
                "pred": it.answer,
                "answer": it.answer,
                "loss": 2.0 + (i % 7) / 10 if part == "forget" else 0.3,
                "mink": 0.2,
            }
        )
    store.write_probe_results(run_id, "before", rows_b)
    store.write_probe_results(run_id, "after", rows_a)
    metrics = {
        "forget_acc_before": 1.0,
        "forget_acc_after": 0.15,
        "retain_acc_before": 0.99,
        "retain_acc_after": 0.974,
        "mia_auc_before": 0.91,
        "mia_auc": 0.512,
        "forgetting_rate": 0.85,
        "knowledge_preservation": 0.974,
        "retain_change_points": -1.6,
        "changed_fraction": 0.001,
        "seconds": 42.0,
        "unlearn_seconds": 12.0,
    }
    store.write_metrics(run_id, metrics)
    store.write_generations(
        run_id,
        "before",
        [{"prompt_id": f"forget:{split.forget[0].id}", "prompt": split.forget[0].question, "output": "the old answer"}],
    )
    store.write_generations(
        run_id,
        "after",
        [{"prompt_id": f"forget:{split.forget[0].id}", "prompt": split.forget[0].question, "output": "something else"}],
    )
    store.update_run(
        run_id,
        summary={
            **metrics,
            "info": {
                "stopped": "reached_target",
                "steps": 75,
                "mask_size": 1193,
                "mask_fraction": 0.001,
                "repair_damaged_before": 8,
                "repair_damaged_after": 0,
                "repair_steps": 4,
                "repair_reverted": False,
            },
        },
    )
    store.set_status(run_id, "done")
    return metrics


# ---------------------------------------------------------------------------------------------
# dashboard views (pure functions) and the hierarchy workspace
# ---------------------------------------------------------------------------------------------
def test_synthetic_5000_concepts_figure_and_roles():
    t0 = time.perf_counter()
    h = synthetic_hierarchy(5000)
    t_build = time.perf_counter() - t0
    assert 4900 <= len(h) <= 5100 and h.level_counts()[4] > 4000
    sel = [h.roots()[0], h.children(h.roots()[1])[0]]
    timings = {}
    t = time.perf_counter()
    arrays = D.tree_arrays(h)
    timings["tree_arrays"] = time.perf_counter() - t
    t = time.perf_counter()
    fig = D.hierarchy_figure(h, sel, arrays=arrays)
    timings["figure"] = time.perf_counter() - t
    t = time.perf_counter()
    roles = D.selection_roles(h, sel)
    timings["roles"] = time.perf_counter() - t
    t = time.perf_counter()
    D.hierarchy_key(h)
    timings["key"] = time.perf_counter() - t
    trace = fig.data[0]
    assert len(trace.ids) == len(h) and trace.maxdepth == 3
    assert sum(r != "preserved" for r in roles.values()) == len(h.subtree(sel[0])) + len(h.subtree(sel[1]))
    colors = dict(zip(trace.ids, trace.marker.colors))
    assert colors[sel[0]] == D.FORGET and colors[h.children(sel[0])[0]] == D.FORGET_LIGHT
    print(
        f"\n5,000-concept hierarchy: build {t_build * 1000:.0f} ms, "
        + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items())
    )


def test_concept_from_event_formats():
    h = load_default()
    arrays = D.tree_arrays(h)
    assert D.concept_from_event({"selection": {"points": [{"id": "anxiety", "parent": "psychiatry"}]}}, h) == "anxiety"
    assert (
        D.concept_from_event({"selection": {"points": [{"customdata": ["panic_disorder", "L4", ""]}]}}, h)
        == "panic_disorder"
    )
    idx = arrays["ids"].index("anxiety")
    assert D.concept_from_event({"selection": {"points": [{"point_index": idx}]}}, h, arrays) == "anxiety"
    assert D.concept_from_event({"selection": {"points": []}}, h) is None
    assert D.concept_from_event(None, h) is None


def test_selection_helpers():
    h = load_default()
    child = h.children("anxiety")[0]
    assert D.clean_selection(h, ["anxiety", child, "nope", "anxiety"]) == ["anxiety"]
    assert D.toggle_selection(["a"], "b", True) == ["a", "b"]
    assert D.toggle_selection(["a", "b"], "a", False) == ["b"]


def test_split_table_and_collateral_map(store):
    h = load_default()
    items = load("demo").items
    split = make_split(items, h, ["anxiety"])
    tab = D.split_table(h, split)
    assert tab.loc[0, "forget"] == len(split.forget) and tab.loc[0, "holdout"] == len(split.holdout_forget)
    seed_run(store)
    probes = store.probe_results("r-seeded")
    cmap = D.collateral_map(h, probes).set_index("concept_id")
    # Rolled up: the anxiety row counts every probed item below it, and lost accuracy.
    below = h.subtree("anxiety")
    n_below = probes[(probes.phase == "before") & probes.concept_id.isin(below)].shape[0]
    assert cmap.loc["anxiety", "n"] == n_below
    assert cmap.loc["anxiety", "change_pts"] < 0
    root = h.ancestors("anxiety")[-1]
    assert cmap.loc[root, "n"] >= n_below
    q = D.per_question(probes)
    assert len(q) == len(items)
    lost = D.filter_questions(q, splits=["forget"], change="lost")
    assert len(lost) > 0 and (lost["split"] == "forget").all()
    assert len(D.filter_questions(q, change="unchanged")) + len(D.filter_questions(q, change="changed")) == len(q)
    fig = D.mia_figure(probes)
    assert len(fig.data) == 4
    g = D.generations_side_by_side(store.generations("r-seeded"))
    assert g.loc[0, "before"] == "the old answer" and g.loc[0, "after"] == "something else"


def test_latest_runs_table_and_preserved_probes(store):
    seed_run(store)
    store.create_run(
        "r-queued", author="x", method="hdsu", model="demo", dataset="demo", forget_concepts=["asthma"], config={}
    )
    runs = store.list_runs()
    table = D.latest_runs_table(runs, store.metrics).set_index("run")
    assert table.loc["r-seeded", "status"] == "✅ done" and table.loc["r-seeded", "forget acc"] == "100.0% → 15.0%"
    assert table.loc["r-queued", "status"] == "⏳ queued" and table.loc["r-queued", "MIA AUC"] == "–"
    h = load_default()
    probes = store.probe_results("r-seeded")
    kept = D.preserved_probes(h, probes, ["anxiety"])
    assert len(kept) and not kept["concept_id"].isin(h.subtree("anxiety")).any()
    assert D.preserved_probes(h, probes.iloc[:0], ["anxiety"]).empty


def test_metric_cards_and_headline():
    m = {
        "forget_acc_before": 1.0,
        "forget_acc_after": 0.2,
        "retain_acc_before": 0.9,
        "retain_acc_after": 0.88,
        "mia_auc": 0.5,
        "changed_fraction": 0.01,
        "seconds": 75,
    }
    cards = {c["label"]: c for c in D.metric_cards(m)}
    assert cards["Forgetting rate (FR)"]["value"] == "80.0%"
    assert cards["Knowledge preserved (KP)"]["value"] == "88.0%"
    assert cards["Retain change"]["value"] == "-2.0 pts"
    assert cards["Time"]["value"] == "1 min 15 s"
    hl = D.headline(m)
    assert hl["forget acc"] == "100.0% → 20.0%" and hl["MIA AUC"] == "0.500"
    assert "interval" not in cards["MIA AUC"]["help"]
    cards = {c["label"]: c for c in D.metric_cards({**m, "mia_auc_ci_low": 0.381, "mia_auc_ci_high": 0.622})}
    assert "95 % interval after: 0.38–0.62" in cards["MIA AUC"]["help"]


def test_save_hierarchy_optimistic_concurrency(store):
    h, base = W.load_working(store)
    assert base is None
    h.rename("anxiety", "Anxiety disorders")
    res = W.save_hierarchy(store, h, base, "alice", "rename")
    assert res["ok"] and res["version"] == 1 and "anxiety" in res["diff"]["changed"]
    # Bob loaded version 1, Carol saves first: Bob's save is refused.
    bob, bob_base = W.load_working(store)
    carol, carol_base = W.load_working(store)
    carol.set_terms("anxiety", ["anxiety", "worry"])
    assert W.save_hierarchy(store, carol, carol_base, "carol", "")["ok"]
    bob.rename("depression", "Depressive disorders")
    res = W.save_hierarchy(store, bob, bob_base, "bob", "")
    assert not res["ok"] and "changed since you loaded it" in res["error"]
    assert len(store.list_hierarchy_versions()) == 2
    assert set(store.audit_events()["action"]) == {"save_hierarchy"}


def test_upload_validation_and_icd_merge():
    h, viol = W.parse_hierarchy_json(
        b'{"concepts": [{"id": "a", "name": "A", "level": 2}, {"id": "a", "name": "", "level": 1}]}'
    )
    assert h is None and {v.kind for v in viol} >= {"orphan", "duplicate_id"}
    assert W.parse_hierarchy_json(b"not json")[1][0].kind == "bad_format"
    base = load_default()
    round_trip, viol = W.parse_hierarchy_json(W.hierarchy_json(base))
    assert not viol and len(round_trip) == len(base)
    br = import_branch("F40-F48")
    merged = W.merge_branch(base, br, "add")
    assert len(merged) == len(base) + len(br)
    again = W.merge_branch(merged, br, "replace")
    assert len(again) == len(merged)
    with pytest.raises(HierarchyError):
        W.merge_branch(base, br, "bogus")


def test_dataset_choices_and_key_settings(tmp_path):
    assert D.dataset_choices(tmp_path) == {"Demo knowledge base (embedded)": "demo"}
    (tmp_path / "medmcqa").mkdir()
    (tmp_path / "medmcqa" / "dev.jsonl").write_text("{}\n")
    assert "MedMCQA dev" in D.dataset_choices(tmp_path)
    ks = D.key_settings(get_method("hdsu").defaults)
    assert 0 < len(ks) <= 6 and all(isinstance(v, (int, float)) for v in ks.values())
    assert D.runs_table(pd.DataFrame()).empty


# ---------------------------------------------------------------------------------------------
# Pages (AppTest)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_an_empty_store(home, page):
    at = app(page)
    assert at.title, f"{page} has no title"


def test_every_page_renders_with_a_finished_run(store):
    seed_run(store)
    for page in PAGES:
        at = app(page)
        assert at.title


def test_runs_page_says_how_a_finished_run_went(store):
    """Inspecting a finished run shows why it stopped and what the retain repair restored."""
    seed_run(store)
    text = " ".join(m.value for m in app("runs").markdown)
    assert "The run reached the target" in text and "Update steps:** 75" in text
    assert "the retain repair restored 8 of them in 4 step(s)" in text


def test_identity_is_shown_and_stored(home):
    # AppTest (1.67) keeps only the page's elements after the first run of an st.navigation app,
    # so the sidebar is checked on first runs.
    at = app()
    assert at.sidebar.text_input(key="actor_input").value == ""
    assert any("anonymous" in c.value for c in at.sidebar.caption)
    at = app(state={"actor": "Dr. Ada"})
    assert at.session_state["actor"] == "Dr. Ada"
    assert any("Dr. Ada" in c.value for c in at.sidebar.caption)


def test_hierarchy_pick_add_edit_and_save(store):
    at = app("hierarchy")
    at.selectbox(key="concept_pick").set_value("anxiety").run()
    assert any(m.value == "#### Anxiety" for m in at.markdown)
    at.button(key="sel_add").click().run()
    assert at.session_state["forget_selection"] == ["anxiety"]
    assert at.multiselect(key="forget_ms").value == ["anxiety"]
    # Invalid edit: a duplicate id is refused and explained next to the form.
    at.text_input[1].set_value("Anxiety")  # "Name" in the add form
    at.text_input[3].set_value("anxiety")  # "Id (optional)"
    at.button(key="FormSubmitter:add_form-Add").click().run()
    assert any("Refused" in e.value for e in at.error)
    # Valid rename, then save a version with author and message.
    at.text_input[0].set_value("Anxiety disorders")
    at.button(key="FormSubmitter:rename_form-Apply").click().run()
    assert not at.exception
    assert at.session_state["hierarchy_dirty"] is True
    msg = [t for t in at.text_input if t.label == "Message"][0]
    msg.set_value("clearer name")
    at.button(key="FormSubmitter:save_form-Save").click().run()
    versions = store.list_hierarchy_versions()
    assert len(versions) == 1 and versions.loc[0, "message"] == "clearer name"
    assert store.get_hierarchy_version(1)["diff"]["changed"]["anxiety"]["name"][1] == "Anxiety disorders"
    # Someone else saves meanwhile: the next save is refused.
    other = Hierarchy.from_dict(store.get_hierarchy_version(1)["hierarchy"])
    other.set_terms("depression", ["depression", "low mood"])
    store.save_hierarchy_version(other.to_dict(), author="someone", message="concurrent")
    at.text_input[0].set_value("Anxiety disorders (all)")
    at.button(key="FormSubmitter:rename_form-Apply").click().run()
    at.button(key="FormSubmitter:save_form-Save").click().run()
    assert any("changed since you loaded it" in e.value for e in at.error)
    assert len(store.list_hierarchy_versions()) == 2


def test_unlearn_counts_follow_the_selection(home):
    h = load_default()
    expected = make_split(load("demo").items, h, ["anxiety"])
    at = app("unlearn", {"forget_selection": ["anxiety"]})
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Forget (trained on)"] == str(len(expected.forget))
    assert metrics["Retain"] == str(len(expected.retain))
    assert metrics["Holdout"] == str(len(expected.holdout))
    assert not at.button(key="launch").disabled


def test_unlearn_device_choice(home):
    at = app("unlearn", {"forget_selection": ["anxiety"]})
    sb = at.selectbox(key="device")
    assert sb.value == "auto"
    assert sb.options == list(available_devices().values())  # only devices this machine has
    sb.set_value("cpu").run()
    assert not at.exception and at.session_state["device"] == "cpu"


def test_unlearn_processes_and_checkpointing_choice(home):
    """The Unlearn page offers data-parallel processes (1 by default; a two-process launch and
    its cancel are tested through jobs.launch in test_distributed.py) and gradient checkpointing."""
    at = app("unlearn", {"forget_selection": ["anxiety"]})
    ni = at.number_input(key="processes")
    assert ni.value == 1 and ni.min == 1
    ni.set_value(2).run()
    at.checkbox(key="gradient_checkpointing").check().run()
    assert not at.exception
    assert at.session_state["processes"] == 2 and at.session_state["gradient_checkpointing"] is True


def test_unlearn_lora_choices_reach_the_launched_config(home, monkeypatch):
    """Unlearning through LoRA adapters (any model), and LoRA / DP-SGD for the injection of a named
    model, go from the page's inputs into the run's config (0 = off: the run config has none)."""
    launched: list = []
    monkeypatch.setattr(jobs, "launch", lambda cfg, store, author: launched.append(cfg) or "r-lora")
    at = app("unlearn", {"forget_selection": ["anxiety"]})
    assert at.number_input(key="unlearn_lora_r").value == 0
    at.button(key="launch").click().run()
    assert launched[-1].unlearn_lora_r is None and launched[-1].recipe == {}
    at.number_input(key="unlearn_lora_r").set_value(8).run()
    assert any("LoRA adapters of rank 8" in c.value for c in at.caption)
    at.button(key="launch").click().run()
    assert not at.exception and launched[-1].unlearn_lora_r == 8 and launched[-1].model == "demo"
    at.radio(key="model_choice").set_value("smollm2-135m").run()
    at.number_input(key="inject_lora_r").set_value(8).run()
    at.number_input(key="inject_dp_epsilon").set_value(4.0).run()
    at.number_input(key="unlearn_lora_r").set_value(0).run()
    at.button(key="launch").click().run()
    cfg = launched[-1]
    assert not at.exception and cfg.model == "smollm2-135m" and cfg.inject and cfg.unlearn_lora_r is None
    assert cfg.recipe == {"lora_r": 8, "dp_epsilon": 4.0, "dp_delta": 1e-5, "dp_clip": 1.0}


def test_unlearn_through_lora_shows_and_sends_hdsu_lora_defaults(home, monkeypatch):
    """With a LoRA rank the hdsu inputs start at its LoRA defaults (mask_fraction 1, step_norm 1),
    the caption names them, and launching untouched sends no settings (the engine applies them);
    a value the user types is sent."""
    launched: list = []
    monkeypatch.setattr(jobs, "launch", lambda cfg, store, author: launched.append(cfg) or "r-lora")
    at = app("unlearn", {"forget_selection": ["anxiety"]})
    at.selectbox(key="method").set_value("hdsu").run()
    assert at.number_input(key="set_hdsu_mask_fraction").value == 0.001
    at.number_input(key="unlearn_lora_r").set_value(8).run()
    assert at.number_input(key="set_hdsu_lora_mask_fraction").value == 1.0
    assert at.number_input(key="set_hdsu_lora_step_norm").value == 1.0
    assert any("LoRA defaults: mask_fraction=1, step_norm=1" in c.value for c in at.caption)
    at.button(key="launch").click().run()
    assert not at.exception and launched[-1].settings == {} and launched[-1].unlearn_lora_r == 8
    at.number_input(key="set_hdsu_lora_mask_fraction").set_value(0.5).run()
    at.button(key="launch").click().run()
    assert launched[-1].settings == {"mask_fraction": 0.5}


def test_unlearn_fsdp_choice_needs_processes_and_a_lora_rank(home, monkeypatch):
    """'Shard the base (FSDP)' is off by default; checked alone it blocks the launch with what it
    needs; with 2 processes and a LoRA rank it reaches the launched config (the sharded run itself:
    test_distributed.py)."""
    launched: list = []
    monkeypatch.setattr(jobs, "launch", lambda cfg, store, author: launched.append(cfg) or "r-fsdp")
    at = app("unlearn", {"forget_selection": ["anxiety"]})
    assert at.checkbox(key="fsdp").value is False
    at.checkbox(key="fsdp").check().run()
    assert any("needs 2 or more processes and a LoRA rank" in i.value for i in at.info)
    assert at.button(key="launch").disabled
    at.number_input(key="processes").set_value(2).run()
    at.number_input(key="unlearn_lora_r").set_value(4).run()
    assert not any("FSDP" in i.value for i in at.info) and not at.button(key="launch").disabled
    at.button(key="launch").click().run()
    cfg = launched[-1]
    assert not at.exception and cfg.fsdp and cfg.processes == 2 and cfg.unlearn_lora_r == 4


def test_unlearn_offers_every_attack_off_by_default(home):
    from hdsu_core.attacks import available as attacks_available

    at = app("unlearn", {"forget_selection": ["anxiety"]})
    ms = at.multiselect(key="attacks")
    assert ms.value == [] and ms.options == [ATTACK_LABELS[a] for a in attacks_available()]
    ms.select("quant").select("relearn").run()
    assert not at.exception and at.session_state["attacks"] == ["quant", "relearn"]


def test_unlearn_empty_selection_disables_launch(home):
    at = app("unlearn", {"forget_selection": []})
    assert at.button(key="launch").disabled
    assert any("Nothing selected" in i.value for i in at.info)


def test_launch_creates_a_run_then_cancel(home, store):
    # Reuse the already built demo model when this checkout has one, so the worker gets going fast.
    real_models = paths.PROJECT_ROOT / "var" / "models"
    if real_models.is_dir():
        (home / "models").symlink_to(real_models, target_is_directory=True)
    at = app("unlearn", {"forget_selection": ["anxiety"], "actor": "tester", "attacks": ["quant", "relearn"]})
    t_launch = time.time()
    at.button(key="launch").click().run()
    assert not at.exception
    rid = at.session_state["last_launched"]
    run = store.get_run(rid)
    assert run is not None and run["status"] in ("queued", "running") and run["author"] == "tester"
    assert run["forget_concepts"] == ["anxiety"] and run["method"] == "hdsu"
    assert run["config"]["device"] == "auto"
    assert run["config"]["attacks"] == ["quant", "relearn"]  # the worker runs them in the registry's order
    pid = run["pid"]
    # Cancel from the Runs page right away, as a user would (a queued run can be cancelled).
    at = app("runs", {"actor": "tester"})
    at.button(key=f"cancel_{rid}").click().run()
    assert not at.exception
    try:
        deadline = time.time() + 60
        while time.time() < deadline and jobs.pid_alive(pid):
            time.sleep(0.5)
    finally:
        if jobs.pid_alive(pid):  # a fresh checkout builds the demo model first: stop it regardless
            os.killpg(os.getpgid(pid), signal.SIGKILL)
    print(
        f"\nworker {pid}: launch -> exit after cancel in {time.time() - t_launch:.1f} s; log tail:\n"
        + jobs.log_tail(rid, lines=8)
    )
    events = store.audit_events(run_id=rid)
    assert {"launch_run", "cancel_run"} <= set(events["action"])
    assert set(events[events.action == "cancel_run"]["actor"]) == {"tester"}
    jobs.reap(store)
    assert store.get_run(rid)["status"] in ("cancelled", "failed")


def test_compare_shows_stored_numbers(store):
    seed_run(store)
    at = app("compare")
    cards = {m.label: m.value for m in at.metric}
    assert cards["Forgetting rate (FR)"] == "85.0%"
    assert cards["Knowledge preserved (KP)"] == "97.4%"
    assert cards["Retain change"] == "-1.6 pts"
    assert cards["MIA AUC"] == "0.512"
    assert cards["Time"] == "42 s"
    assert at.selectbox(key="compare_run").value == "r-seeded"
    at.selectbox(key="q_change").set_value("lost").run()
    assert not at.exception


def test_audit_page_offers_downloads(store):
    seed_run(store)
    at = app("audit", {"actor": "auditor"})
    assert not at.error, [e.value for e in at.error]
    assert "Download HTML" in [b.label for b in at.get("download_button")]
    # The PDF is rendered on demand ("Prepare PDF"); build_pdf itself is covered by the audit tests.
    assert "Prepare PDF" in [b.label for b in at.button]
    next(b for b in at.get("download_button") if b.label == "Download HTML").click().run()
    assert not at.exception
    ev = store.audit_events(run_id="r-seeded")
    assert ((ev.action == "export_report") & (ev.actor == "auditor")).any()


def test_hierarchy_page_with_5000_concepts(home):
    big = synthetic_hierarchy(5000)
    state = {
        "hierarchy": big,
        "hierarchy_base": None,
        "hierarchy_dirty": False,
        "hierarchy_key": D.hierarchy_key(big),
        "forget_selection": [big.roots()[0]],
    }
    t0 = time.perf_counter()
    at = app("hierarchy", state)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    at.run()
    again = time.perf_counter() - t0
    assert not at.exception
    assert at.multiselect(key="forget_ms").value == [big.roots()[0]]
    print(f"\nHierarchy page, 5,000 concepts: first render {first:.2f} s (incl. app start), rerun {again:.2f} s")
