import streamlit as st

from hdsu_core import dashboard as D
from hdsu_core import workspace as W
from hdsu_core.store import RunStatus
from pages import _ui

_ui.header(
    "Compare runs",
    "Three or more runs at once: their headline metrics side by side and their per-concept accuracy "
    "changes overlaid on one axis (where the lines part, the runs differ in what they removed and kept).",
)
store = _ui.store()
ss = st.session_state

runs = store.list_runs(limit=200)
done = runs[runs["status"] == RunStatus.DONE] if not runs.empty else runs
if done.empty:
    st.info("No finished runs yet. Launch some from the Unlearn or Benchmarks page.", icon="ℹ️")
    st.stop()

labels = {r["run_id"]: D.run_label(r) for _, r in done.iterrows()}
ss.setdefault("many_runs", list(labels)[:3])
ss["many_runs"] = [r for r in ss["many_runs"] if r in labels]
picked = st.multiselect("Runs", list(labels), format_func=labels.get, key="many_runs", placeholder="pick runs…")
if len(picked) < 2:
    st.info("Pick at least two runs (three or more to see how a method family spreads).", icon="👆")
    st.stop()


@st.cache_data(show_spinner=False, max_entries=64)
def _collateral(db: str, run_id: str, splits: tuple):
    run = store.get_run(run_id)
    h = W.run_hierarchy(store, run) or _ui.working_hierarchy()
    return D.collateral_map(h, store.probe_results(run_id), splits or None)


rows = [store.get_run(r) for r in picked]
st.dataframe(D.runs_side_by_side(rows, store.metrics), hide_index=True, width="stretch")

st.markdown("##### Per-concept accuracy change")
a, b = st.columns(2)
level = a.radio("Level", [1, 2, 3, 4], index=2, horizontal=True, format_func="L{}".format, key="many_level")
scope = b.radio(
    "Items",
    ["all", "preserved"],
    horizontal=True,
    key="many_scope",
    format_func={"all": "all probed items", "preserved": "retain + holdout only (collateral damage)"}.get,
)
splits = ("retain", "holdout") if scope == "preserved" else ()
maps = {r: _collateral(str(store.path), r, splits) for r in picked}
changes = D.concept_changes(maps, level)
if changes.empty:
    st.caption("These runs have no probed items at this level.")
else:
    short = {r: f"{r} · {labels[r].split(' · ')[1]}" for r in picked}
    st.plotly_chart(D.concept_changes_figure(changes, short), width="stretch", key="many_changes")
    with st.expander("Per-concept table"):
        wide = changes.pivot_table(index=["concept_id", "name"], columns="run", values="change_pts", sort=False)
        st.dataframe(wide.reset_index(), hide_index=True, width="stretch")
