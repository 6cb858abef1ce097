"""Issue #21: the hierarchy as a graph, the Benchmarks page, comparing many runs, the run-time
estimate. Pure view functions first, then the pages through streamlit's AppTest (one test starts a
real bench worker on the demo model: about a minute on two CPU cores).

A click in a plotly chart is a widget value the browser sends; AppTest has no API for it, so
``click_chart`` sends the same JSON the Streamlit frontend sends for a clicked point.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
import time

import pandas as pd
import pytest
import streamlit as st
from hierarchy_helpers import synthetic_hierarchy
from streamlit.proto.WidgetStates_pb2 import WidgetState
from test_app import app, seed_run

from hdsu_core import bench_jobs, paths
from hdsu_core import dashboard as D
from hdsu_core.dashboard import graph as G
from hdsu_core.hierarchy import Hierarchy, load_default
from hdsu_core.methods.base import Cancelled
from hdsu_core.store import Store


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HDSU_HOME", str(tmp_path))
    monkeypatch.delenv("HDSU_DB", raising=False)
    return tmp_path


@pytest.fixture
def store(home) -> Store:
    return Store()


# README, "Forget anxiety" (demo, seed 0): forget acc after, retain acc after, MIA AUC, changed fraction, seconds.
README_ANXIETY = {
    "retrain": (0.00, 1.000, 0.537, 1.0, 20.0),
    "hdsu": (0.00, 1.000, 0.478, 0.001, 17.0),
    "grad_ascent": (0.15, 0.398, 0.204, 0.65, 6.0),
    "grad_diff": (0.00, 0.771, 0.335, 0.72, 3.0),
    "npo": (0.00, 0.878, 0.380, 0.73, 7.0),
}


def bench_rows(table: dict = README_ANXIETY, seed: int = 0, shift: float = 0.0, forget=("anxiety",)) -> list[dict]:
    """Rows as run_bench stores them (``shift`` moves forget acc up and retain acc down: another seed)."""
    return [
        {
            "dataset": "demo",
            "run_id": "",
            "method": m,
            "forget": list(forget),
            "seed": seed,
            "forget_acc_before": 1.0,
            "forget_acc_after": f + shift,
            "retain_acc_before": 1.0,
            "retain_acc_after": r - shift,
            "mia_auc": mia,
            "changed_fraction": ch,
            "seconds": sec,
        }
        for m, (f, r, mia, ch, sec) in table.items()
    ]


def click_chart(at, key: str, concept_id: str):
    """Click the graph node of ``concept_id`` as the browser would: the chart's widget value
    becomes the selection JSON of that point (curve, index, customdata read from the drawn figure)."""
    chart = next(c for c in at.get("plotly_chart") if c.key == key)
    nodes = json.loads(chart.proto.spec)["data"][G.NODE_TRACE]
    i = [c[0] for c in nodes["customdata"]].index(concept_id)
    point = {
        "curve_number": G.NODE_TRACE,
        "point_number": i,
        "point_index": i,
        "x": nodes["x"][i],
        "y": nodes["y"][i],
        "customdata": nodes["customdata"][i],
    }
    value = {"selection": {"points": [point], "point_indices": [i], "box": [], "lasso": []}}
    states = at._tree.get_widget_states()  # the other widgets keep their values, as in a browser
    states.widgets.append(WidgetState(id=chart.proto.id, string_value=json.dumps(value)))
    at._run(states)
    assert not at.exception, [e.value for e in at.exception]
    return at


def graph_nodes(at) -> dict:
    """The graph's node trace as drawn: id -> (label, colour)."""
    chart = next(c for c in at.get("plotly_chart") if c.key == "hier_chart_graph")
    nodes = json.loads(chart.proto.spec)["data"][G.NODE_TRACE]
    return {c[0]: (t, col) for c, t, col in zip(nodes["customdata"], nodes["text"], nodes["marker"]["color"])}


# ---------------------------------------------------------------------------------------------
# the graph (pure)
# ---------------------------------------------------------------------------------------------
def test_visible_concepts_collapse_below_a_level_and_open_around_the_focus():
    h = load_default()
    top = G.visible_concepts(h, 2)
    assert {h.concept(c).level for c in top} == {1, 2} and len(top) == 15
    domain = next(c for c in top if h.concept(c).level == 2 and h.children(c))
    opened = G.visible_concepts(h, 2, expanded=[domain])
    assert set(opened) == set(top) | set(h.children(domain))
    focused = G.visible_concepts(h, 1, focus="anxiety")
    assert set(focused) == {*h.roots(), *h.ancestors("anxiety"), "anxiety", *h.children("anxiety")}
    deep = h.children("anxiety")[0]
    assert set(G.visible_concepts(h, 1, selected=[deep])) == {*h.roots(), *h.ancestors(deep), deep}
    root = h.ancestors("anxiety")[-1]
    assert set(G.visible_concepts(h, 4, branch=root)) == h.subtree(root)
    assert top == [c for c in h.ordered_ids() if c in set(top)]  # depth-first, like the sunburst


@pytest.mark.parametrize("layout", G.GRAPH_LAYOUTS)
def test_tree_layout_one_row_or_ring_per_level_and_parents_centred(layout):
    h = load_default()
    ids = G.visible_concepts(h, 3)
    view = G.graph_view(h, ids, layout)
    assert set(view.pos) == set(ids)
    if layout == "layered":
        assert all(view.pos[c][0] == h.concept(c).level for c in ids)  # one column per level
        rows = [view.pos[c][1] for c in view.leaves]
        assert len(set(rows)) == len(rows) == len(view.leaves)  # a line of its own for every leaf
        for c in ids:
            kids = [view.pos[k][1] for k in h.children(c) if k in view.pos]
            if kids:
                assert view.pos[c][1] == pytest.approx((min(kids) + max(kids)) / 2)
        assert view.labels_fit() and view.height == 16 * len(view.leaves) + 90
    else:
        assert all(math.hypot(*view.pos[c]) == pytest.approx(h.concept(c).level) for c in ids)
    # Collapsed concepts say how much they hide: every L3 concept here hides its L4 children.
    assert view.hidden["anxiety"] == len(h.descendants("anxiety")) > 0


def test_graph_figure_colours_cross_links_and_click():
    h = load_default()
    fig = D.hierarchy_graph_figure(h, ["medicine"], depth=2, focus="anxiety")
    nodes = fig.data[G.NODE_TRACE]
    ids = [c[0] for c in nodes.customdata]
    colors = dict(zip(ids, nodes.marker.color))
    assert colors["medicine"] == D.FORGET and "anxiety" in ids and set(h.children("anxiety")) <= set(ids)
    assert colors[h.parent("anxiety")] == D.LEVEL_COLORS[2]
    # "internal medicine" is a term of medicine (selected) and of internal_medicine_domain
    # (preserved): a dotted cross-link between them, hover text naming the term.
    links = D.shared_term_links(h, ["medicine"], set(ids))
    assert links == [{"a": "medicine", "b": "internal_medicine_domain", "terms": ["internal medicine"]}]
    assert len([x for x in fig.data[1].x if x is not None]) == 2
    assert "internal medicine" in fig.data[3].text[0]
    # A collapsed concept stands for the hidden end of a link: two L4 concepts of different
    # branches share "worry"; drawn down to L2, the link joins their L2 ancestors.
    h2 = Hierarchy.from_dict(
        {
            "concepts": [
                {"id": "a", "name": "A", "level": 1},
                {"id": "a2", "name": "A2", "level": 2, "parent": "a"},
                {"id": "a3", "name": "A3", "level": 3, "parent": "a2"},
                {"id": "a4", "name": "A4", "level": 4, "parent": "a3", "terms": ["worry"]},
                {"id": "b2", "name": "B2", "level": 2, "parent": "a"},
                {"id": "b3", "name": "B3", "level": 3, "parent": "b2"},
                {"id": "b4", "name": "B4", "level": 4, "parent": "b3", "terms": ["Worry "]},
            ]
        }
    )
    shown = set(G.visible_concepts(h2, 2))
    assert shown == {"a", "a2", "b2"}
    assert D.shared_term_links(h2, ["a2"], shown) == [{"a": "a2", "b": "b2", "terms": ["worry"]}]
    assert D.shared_term_links(h2, ["a"], shown) == []  # both ends forgotten: no collateral risk
    # Clicks: only points of the node trace count.
    i = ids.index("anxiety")
    assert (
        D.graph_concept_from_event(
            {"selection": {"points": [{"curve_number": 2, "customdata": nodes.customdata[i]}]}}, h
        )
        == "anxiety"
    )
    assert (
        D.graph_concept_from_event({"selection": {"points": [{"curve_number": 3, "customdata": ["anxiety"]}]}}, h)
        is None
    )
    assert D.graph_concept_from_event({"selection": {"points": []}}, h) is None


def test_graph_coloured_by_a_runs_accuracy_change():
    h = load_default()
    fig = D.hierarchy_graph_figure(h, [], depth=3, color_by="change", change={"anxiety": -40.0, "medicine": 5.0})
    colors = dict(zip([c[0] for c in fig.data[G.NODE_TRACE].customdata], fig.data[G.NODE_TRACE].marker.color))
    lost, gained = colors["anxiety"], colors["medicine"]
    assert lost != gained and G.NO_DATA not in (lost, gained)
    assert colors[h.roots()[0]] == G.NO_DATA  # no probe items in this run
    assert lost == G.change_colors([-40.0], 40.0)[0]  # the most lost: the red end of the scale
    assert fig.data[-1].marker.showscale  # the colour bar


def test_5000_concept_graph_opens_collapsed():
    big = synthetic_hierarchy(5000)
    t0 = time.perf_counter()
    fig = D.hierarchy_graph_figure(big, [big.roots()[0]])
    graph_json = len(fig.to_json())
    t_graph = time.perf_counter() - t0
    t0 = time.perf_counter()
    icicle_json = len(D.hierarchy_figure(big, [big.roots()[0]], kind="icicle").to_json())
    t_icicle = time.perf_counter() - t0
    assert len(fig.data[G.NODE_TRACE].x) == big.level_counts()[1] + big.level_counts()[2]  # L1 + L2 only
    assert graph_json * 10 < icicle_json
    print(
        f"\n5,000 concepts, figure + JSON: graph (collapsed, {len(fig.data[G.NODE_TRACE].x)} nodes) "
        f"{t_graph * 1000:.0f} ms / {graph_json / 1e3:.0f} kB, "
        f"icicle {t_icicle * 1000:.0f} ms / {icicle_json / 1e3:.0f} kB"
    )


# ---------------------------------------------------------------------------------------------
# benchmarks, many runs, estimate (pure)
# ---------------------------------------------------------------------------------------------
def _raw(rows: list[dict], bench_id: str, created: dt.datetime) -> list[dict]:
    return [
        {"bench_id": bench_id, "created_at": created, "dataset": r["dataset"], "method": r["method"], "metrics": r}
        for r in rows
    ]


def test_bench_summary_pareto_front_and_figures():
    day = dt.datetime(2026, 12, 1, 10)
    raw = pd.DataFrame(
        _raw(bench_rows(seed=0), "b1", day)
        + _raw(bench_rows(seed=1, shift=0.1), "b2-s1", day + dt.timedelta(days=1))
        + _raw(bench_rows(seed=1, shift=0.02), "b3-s1", day + dt.timedelta(days=2))  # seed 1 again: the latest counts
    )
    frame = D.bench_frame(raw)
    assert len(frame) == 15 and set(frame["setting"]) == {"demo · forget anxiety"}
    s = D.bench_summary(frame).set_index("method")
    assert s.index[0] == "retrain" and bool(s.loc["retrain", "reference"])
    assert s.loc["npo", "seeds"] == 2
    assert s.loc["npo", "retain_acc_after"] == pytest.approx(0.878 - 0.01)
    assert s.loc["npo", "retain_acc_after_std"] == pytest.approx(math.sqrt(2) * 0.01)
    # hdsu forgets as much as grad_diff / npo and keeps more; nothing beats it on both: alone on the front.
    assert D.pareto_front(s.reset_index()) == ["hdsu"]
    two = s.reset_index()
    two.loc[two["method"] == "grad_ascent", ["forget_acc_after", "retain_acc_after"]] = [0.0, 1.0]
    two.loc[two["method"] == "hdsu", ["forget_acc_after", "retain_acc_after"]] = [0.2, 1.0]
    assert D.pareto_front(two) == ["grad_ascent"]
    two.loc[two["method"] == "npo", ["forget_acc_after", "retain_acc_after"]] = [-0.1, 0.5]
    assert D.pareto_front(two) == ["npo", "grad_ascent"]
    summary = D.bench_summary(frame)
    trade = D.bench_tradeoff_figure(summary)
    names = [t.name for t in trade.data]
    assert names == ["method", "retrain (reference)", D.PARETO]
    assert trade.data[1].marker.symbol == "star" and list(trade.data[2].text) == ["hdsu"]
    assert trade.data[0].error_y.visible and list(trade.data[0].error_y.array)[1] > 0  # seeds as error bars
    changed = D.bench_changed_figure(summary)
    assert changed.layout.yaxis.type == "log"
    mia = D.bench_mia_figure(summary)
    hdsu = list(mia.data[0].text).index("hdsu")
    assert mia.data[0].x[hdsu] == pytest.approx(1 - s.loc["hdsu", "forget_acc_after"])
    table = D.bench_table(summary).set_index("method")
    assert table.loc["retrain (reference)", "changed weights"].startswith("100 %")
    assert table.loc["npo", "retain acc after"] == "86.8% ± 1.4%"
    # Filters: seed and date (both days included).
    assert set(D.filter_bench(frame, seeds=[1])["seed"]) == {1}
    assert set(D.filter_bench(frame, since=day.date(), until=day.date())["bench_id"]) == {"b1"}
    assert D.filter_bench(frame, datasets=["medmcqa:x"]).empty


def test_bench_settings_make_their_own_entry_and_seeds_parse():
    row = {**bench_rows()[1], "settings": {"mask_fraction": 0.01}}
    frame = D.bench_frame(pd.DataFrame(_raw([bench_rows()[1], row], "b1", dt.datetime(2026, 12, 1))))
    assert sorted(frame["method"]) == ["hdsu", "hdsu (mask_fraction=0.01)"]
    assert D.parse_seeds("0, 1,2,1") == [0, 1, 2]
    with pytest.raises(ValueError):
        D.parse_seeds("0,x")
    with pytest.raises(ValueError):
        D.parse_seeds(" ")


def test_run_time_estimate():
    t = pd.Timestamp("2026-12-01 10:00")
    runs = pd.DataFrame(
        [
            {
                "status": "done",
                "model": "demo",
                "dataset": "demo",
                "method": "hdsu",
                "started_at": t,
                "finished_at": t + pd.Timedelta(seconds=s),
            }
            for s in (30, 40, 70)
        ]
        + [
            {
                "status": "done",
                "model": "demo",
                "dataset": "demo",
                "method": "npo",
                "started_at": t,
                "finished_at": t + pd.Timedelta(seconds=9),
            },
            {
                "status": "failed",
                "model": "demo",
                "dataset": "demo",
                "method": "npo",
                "started_at": t,
                "finished_at": t + pd.Timedelta(seconds=999),
            },
            {
                "status": "done",
                "model": "/m/x",
                "dataset": "demo",
                "method": "hdsu",
                "started_at": t,
                "finished_at": t + pd.Timedelta(seconds=999),
            },
        ]
    )
    est = D.run_time_estimate(runs, model="demo", dataset="demo", method="hdsu")
    assert est == {"seconds": 40.0, "n": 3, "method": "hdsu"}
    assert D.run_time_estimate_text(est) == "about 40 s (median of 3 finished hdsu runs of this model on this dataset)"
    npo = D.run_time_estimate(runs, model="demo", dataset="demo", method="npo")
    assert npo == {"seconds": 9.0, "n": 1, "method": "npo"}  # the failed run does not count
    other = D.run_time_estimate(runs, model="demo", dataset="demo", method="simnpo")  # never ran: every method
    assert other == {"seconds": 35.0, "n": 4, "method": None} and "any method" in D.run_time_estimate_text(other)
    assert D.run_time_estimate(runs, model="demo", dataset="medmcqa:x", method="hdsu") is None
    assert D.run_time_estimate_text(None).startswith("no estimate yet")


def test_concept_changes_of_several_runs(store):
    for rid in ("r-1", "r-2", "r-3"):
        seed_run(store, rid, forget=("depression",) if rid == "r-3" else ("anxiety",))
    h = load_default()
    maps = {rid: D.collateral_map(h, store.probe_results(rid)) for rid in ("r-1", "r-2", "r-3")}
    changes = D.concept_changes(maps, level=3)
    assert set(changes["run"]) == {"r-1", "r-2", "r-3"} and set(changes["level"]) == {3}
    a = changes[(changes.run == "r-1") & (changes.concept_id == "anxiety")]["change_pts"].item()
    assert a == pytest.approx(maps["r-1"].set_index("concept_id").loc["anxiety", "change_pts"]) and a < 0
    fig = D.concept_changes_figure(changes)
    assert [t.name for t in fig.data] == ["r-1", "r-2", "r-3"]
    side = D.runs_side_by_side([store.get_run(r) for r in ("r-1", "r-2", "r-3")], store.metrics).set_index("metric")
    assert list(side.columns) == ["r-1", "r-2", "r-3"]
    assert side.loc["forget", "r-3"] == "depression" and side.loc["MIA AUC", "r-1"] == "0.512"


# ---------------------------------------------------------------------------------------------
# bench jobs (no worker)
# ---------------------------------------------------------------------------------------------
def test_bench_progress_counts_units_and_cancels():
    writes, cancel = [], {"now": False}
    p = bench_jobs.BenchProgress(4, writes.append, lambda: cancel["now"])
    p("bench", 0.0, "demo: retrain reference")
    p("train", 0.5, "epoch 3")
    p("bench", 0.0, "demo: hdsu")
    assert writes[0] == {"progress": 0.0, "phase": "bench", "unit": 1, "message": "demo: retrain reference"}
    assert writes[-1]["unit"] == 2 and writes[-1]["progress"] == pytest.approx(0.25)
    p("probe_before", 0.2, "probing")  # within 1 s of the last write: not written, still counted
    assert p.done == pytest.approx(0.3) and len(writes) == 2
    p("unlearn", 0.1, "step 1")  # a phase starting over does not move the bar back
    assert p.done == pytest.approx(0.3)
    cancel["now"] = True
    with pytest.raises(Cancelled):
        p("unlearn", 0.2, "step 2")


def test_bench_config_refuses_before_any_job(home):
    ok = bench_jobs.bench_config(["demo"], ["hdsu", "npo"], seeds=[0, 1], settings={"mask_fraction": 0.01})
    assert ok["seeds"] == [0, 1] and bench_jobs.units(ok) == 2 * (2 + 1) and ok["lora_r"] is None
    assert bench_jobs.bench_config(["demo"], ["npo"], lora_r=8)["lora_r"] == 8
    for kwargs, msg in [
        (dict(datasets=[], methods=["hdsu"]), "dataset"),
        (dict(datasets=["demo"], methods=["nope"]), "unknown method"),
        (dict(datasets=["demo"], methods=["npo"], settings={"mask_fraction": 0.01}), "mask_fraction"),
        (dict(datasets=["demo"], methods=["npo"], lora_r=0), "unlearn_lora_r=0 refused"),
    ]:
        with pytest.raises(ValueError, match=msg):
            bench_jobs.bench_config(kwargs.pop("datasets"), kwargs.pop("methods"), **kwargs)
    assert not list(paths.jobs_dir().glob("bench-*"))


def test_bench_job_whose_worker_died_is_marked_failed(home, store):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = gone.pid
    bench_jobs._update("bench-1-dead", status="running", pid=dead, created_at="2026-12-01T10:00:00+00:00", config={})
    bench_jobs._update("bench-2-done", status="done", pid=dead, created_at="2026-12-01T10:01:00+00:00", config={})
    jobs = {j["job_id"]: j for j in bench_jobs.list_jobs()}
    assert jobs["bench-1-dead"]["status"] == "failed" and str(dead) in jobs["bench-1-dead"]["error"]
    assert jobs["bench-2-done"]["status"] == "done"
    assert bench_jobs.cancel("bench-2-done", store=store, actor="x") == "done"


# ---------------------------------------------------------------------------------------------
# pages (AppTest)
# ---------------------------------------------------------------------------------------------
def test_graph_view_renders_and_a_click_adds_the_concept(home):
    h = load_default()
    at = app("hierarchy")
    at.radio(key="hier_kind").set_value("graph").run()
    assert not at.exception
    nodes = graph_nodes(at)
    assert set(nodes) == set(G.visible_concepts(h, G.default_graph_depth(h)))
    assert "anxiety" in nodes and "panic_disorder" not in nodes  # L4 collapsed under its L3 concept
    click_chart(at, "hier_chart_graph", "anxiety")
    assert any(m.value == "#### Anxiety" for m in at.markdown)
    assert set(h.children("anxiety")) <= set(graph_nodes(at))  # the clicked concept opened
    at.button(key="sel_add").click().run()
    assert at.session_state["forget_selection"] == ["anxiety"]
    nodes = graph_nodes(at)
    assert nodes["anxiety"][1] == D.FORGET and nodes[h.children("anxiety")[0]][1] == D.FORGET_LIGHT
    # An edit in the Edit tab shows up in the graph.
    at.text_input[0].set_value("Anxiety disorders")  # "New name" of the rename form (target: the clicked concept)
    at.button(key="FormSubmitter:rename_form-Apply").click().run()
    assert graph_nodes(at)["anxiety"][0].startswith("Anxiety disorders")


def test_graph_coloured_by_a_finished_run(store):
    seed_run(store)
    at = app("hierarchy")
    at.radio(key="hier_kind").set_value("graph").run()
    at.radio(key="hier_color_graph").set_value("change").run()
    assert not at.exception and at.selectbox(key="graph_run").value == "r-seeded"
    colors = {cid: c for cid, (_, c) in graph_nodes(at).items()}
    assert colors["anxiety"] != colors[load_default().roots()[0]]


def test_5000_concepts_graph_collapsed_renders_faster_than_the_icicle(home):
    big = synthetic_hierarchy(5000)
    state = {
        "hierarchy": big,
        "hierarchy_base": None,
        "hierarchy_dirty": False,
        "hierarchy_key": D.hierarchy_key(big),
        "forget_selection": [big.roots()[0]],
    }
    at = app("hierarchy", state)
    # The page's CPU time (this process: AppTest runs the script in a thread of it), so that other
    # work on a shared machine does not decide the comparison; wall time is printed beside it.
    # Interleaved, the fastest of 5 page runs of each view: with the figure caches emptied (the
    # figure is built) and cached.
    cpu: dict[tuple[str, str], list[float]] = {}
    wall: dict[tuple[str, str], list[float]] = {}

    def timed(kind: str, case: str, run) -> None:
        c0, w0 = time.process_time(), time.perf_counter()
        run()
        cpu.setdefault((kind, case), []).append(time.process_time() - c0)
        wall.setdefault((kind, case), []).append(time.perf_counter() - w0)
        assert not at.exception

    for _ in range(5):
        for kind in ("icicle", "graph"):
            st.cache_data.clear()
            timed(kind, "built", at.radio(key="hier_kind").set_value(kind).run)
            timed(kind, "cached", at.run)
    assert len(graph_nodes(at)) == 44  # 4 roots + 40 L2 concepts: collapsed below L2
    best = {k: (min(cpu[k]), min(wall[k])) for k in cpu}
    print(
        "\nHierarchy page, 5,000 concepts, best of 5 (CPU / wall): "
        + ", ".join(f"{kind} {case} {c:.2f} s / {w:.2f} s" for (kind, case), (c, w) in best.items())
    )
    for case in ("built", "cached"):
        assert best[("graph", case)][0] < best[("icicle", case)][0], case


def test_benchmarks_page_shows_stored_rows_and_the_pareto_front(store):
    store.save_bench("b1", "demo", bench_rows())
    store.save_bench("b2", "demo", bench_rows(seed=1, shift=0.05))
    at = app("benchmarks")
    assert not at.exception and not at.error
    assert [s.value for s in at.subheader] == ["demo · forget anxiety"]
    table = at.dataframe[0].value.set_index("method")
    assert list(table.index) == ["retrain (reference)", "grad_ascent", "grad_diff", "hdsu", "npo"]
    assert table.loc["hdsu", "seeds"] == 2 and table.loc["npo", "retain acc after"] == "85.3% ± 3.5%"
    assert any("**Pareto front** (no other method forgets more *and* keeps more): hdsu." in c.value for c in at.caption)
    trade = json.loads(next(c for c in at.get("plotly_chart") if c.key == "bench_tradeoff_0").proto.spec)
    front = next(t for t in trade["data"] if t["name"] == D.PARETO)
    assert front["text"] == ["hdsu"] and front["y"] == [pytest.approx(1.0 - 0.025)]
    changed = json.loads(next(c for c in at.get("plotly_chart") if c.key == "bench_changed_0").proto.spec)
    assert changed["layout"]["yaxis"]["type"] == "log"
    at.multiselect(key="bench_f_seed").set_value([1]).run()
    assert at.dataframe[0].value.set_index("method").loc["hdsu", "seeds"] == 1


def test_benchmarks_page_launches_a_bench_worker_with_progress(home, store):
    real_models = paths.PROJECT_ROOT / "var" / "models"
    if real_models.is_dir():  # reuse the checkout's demo model (a fresh checkout builds it first)
        (home / "models").symlink_to(real_models, target_is_directory=True)
    at = app("benchmarks", {"actor": "tester", "forget_selection": ["anxiety"]})
    assert any("No benchmark results yet" in i.value for i in at.info)
    at.multiselect(key="bench_methods").set_value(["grad_ascent"])
    at.checkbox(key="bench_retrain").uncheck()
    at.selectbox(key="bench_device").set_value("cpu")
    at.button(key="FormSubmitter:bench_form-Launch benchmark").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    job_id = at.session_state["bench_launched"]
    job = bench_jobs.read_job(job_id)
    assert job["config"]["methods"] == ["grad_ascent"] and job["config"]["forget"] == ["anxiety"]
    assert job["author"] == "tester" and job["units"] == 1
    deadline, seen_progress = time.time() + 400, False
    while time.time() < deadline:
        job = bench_jobs.read_job(job_id)
        if job["status"] == "running" and not seen_progress:
            at.run()
            seen_progress = any(job_id in m.value for m in at.markdown) and len(at.get("progress")) == 1
        if job["status"] not in bench_jobs.ACTIVE:
            break
        time.sleep(1)
    else:
        bench_jobs.cancel(job_id, store=store, actor="tester")
        pytest.fail(f"bench job not done in 400 s:\n{bench_jobs.log_tail(job_id, 20)}")
    assert job["status"] == "done", (job, bench_jobs.log_tail(job_id, 20))
    assert seen_progress, "the page never showed the running job's progress bar"
    runs = store.list_runs()
    assert runs.loc[0, "author"] == "tester" and runs.loc[0, "status"] == "done" and runs.loc[0, "pid"] == job["pid"]
    at.run()
    assert [s.value for s in at.subheader] == ["demo · forget anxiety"]
    assert list(at.dataframe[0].value["method"]) == ["grad_ascent"]
    events = store.audit_events()
    assert {"launch_bench", "bench_done"} <= set(events["action"])


def test_benchmarks_page_passes_the_unlearning_lora_rank_to_the_job(home, store, monkeypatch):
    launched: list = []
    monkeypatch.setattr(bench_jobs, "launch", lambda cfg, store, author: launched.append(cfg) or "bench-lora")
    at = app("benchmarks", {"actor": "tester", "forget_selection": ["anxiety"]})
    at.button(key="FormSubmitter:bench_form-Launch benchmark").click().run()
    assert launched[-1]["lora_r"] is None  # 0: off
    at.number_input(key="bench_lora_r").set_value(8)
    at.button(key="FormSubmitter:bench_form-Launch benchmark").click().run()
    assert not at.exception and launched[-1]["lora_r"] == 8 and at.session_state["bench_launched"] == "bench-lora"


def test_compare_runs_page_three_runs(store):
    for rid in ("r-1", "r-2", "r-3"):
        seed_run(store, rid)
    at = app("compare_runs")
    assert not at.exception
    side = at.dataframe[0].value
    assert list(side.columns) == ["metric", "r-3", "r-2", "r-1"]  # newest first, three preselected
    fig = json.loads(next(c for c in at.get("plotly_chart") if c.key == "many_changes").proto.spec)
    assert len([t for t in fig["data"] if t.get("mode") == "lines+markers"]) == 3


def test_unlearn_page_shows_a_run_time_estimate(store):
    at = app("unlearn", {"forget_selection": ["anxiety"]})
    assert any("Estimated run time: no estimate yet" in c.value for c in at.caption)
    for rid, seconds in (("r-1", 30), ("r-2", 50), ("r-3", 40)):
        seed_run(store, rid)
        start = dt.datetime(2026, 12, 1, 10)
        store.update_run(rid, started_at=start, finished_at=start + dt.timedelta(seconds=seconds))
    at = app("unlearn", {"forget_selection": ["anxiety"]})
    assert any(
        "Estimated run time: about 40 s (median of 3 finished hdsu runs of this model on this dataset)" in c.value
        for c in at.caption
    )
