import streamlit as st

from hdsu_core import dashboard as D
from hdsu_core import fmt
from hdsu_core import workspace as W
from hdsu_core.dashboard import attacks as gone
from hdsu_core.store import RunStatus
from pages import _ui

_ui.header(
    "Compare",
    "What a run removed and what it kept: headline metrics, the collateral map over the "
    "hierarchy, every question before and after, membership-inference scores and sample generations.",
)
store = _ui.store()
ss = st.session_state

runs = store.list_runs(limit=200)
done = runs[runs["status"] == RunStatus.DONE] if not runs.empty else runs
if done.empty:
    st.info("No finished runs yet. Launch one from the Unlearn page.", icon="ℹ️")
    _ui.page_link("pages/unlearn.py", label="Set up a run", icon="✂️")
    st.stop()

labels = {r["run_id"]: D.run_label(r) for _, r in done.iterrows()}
ids = list(labels)
if ss.get("compare_run") not in labels:
    ss["compare_run"] = ids[0]
c1, c2 = st.columns(2)
rid = c1.selectbox("Run", ids, format_func=labels.get, key="compare_run")
other = c2.selectbox(
    "Compare with (optional)",
    ["(none)"] + [i for i in ids if i != rid],
    format_func=lambda i: labels.get(i, i),
    key="compare_other",
)
other = None if other == "(none)" else other


@st.cache_data(show_spinner=False, max_entries=16)
def _probes(db: str, run_id: str):
    return store.probe_results(run_id)


@st.cache_data(show_spinner=False, max_entries=16)
def _metrics(db: str, run_id: str):
    return store.metrics(run_id)


db = str(store.path)
run = store.get_run(rid)
m = _metrics(db, rid)
st.markdown(f"##### {rid}")
st.caption(
    f"{run['method']} · dataset {D.dataset_label(run['dataset'] or '')} · model {run['model']} · forget "
    f"{', '.join(run['forget_concepts'] or [])} · by {run.get('author') or '?'}"
)
if not m:
    st.warning("This run has no stored metrics.", icon="⚠️")
_ui.metric_card_row(D.metric_cards(m), cols_per_row=3)  # 6 in a row truncate values below ~1600 px
with st.expander("📦 The unlearned model: download it, its delta or its receipt"):
    _ui.model_downloads(store, rid, key="compare")
if other:
    st.markdown(f"##### {other}")
    o = store.get_run(other)
    st.caption(f"{o['method']} · forget {', '.join(o['forget_concepts'] or [])}")
    _ui.metric_card_row(D.metric_cards(_metrics(db, other)), cols_per_row=3)

probes = _probes(db, rid)
h = W.run_hierarchy(store, run)
if h is None:  # its stored version cannot be read: show the results on the working hierarchy
    h = _ui.working_hierarchy()
tab_map, tab_q, tab_mia, tab_gen, tab_gone = st.tabs(
    ["Collateral map", "Questions", "Membership inference", "Generations", "Is it really gone?"]
)

with tab_map:
    scope = st.radio(
        "Items",
        ["all", "preserved"],
        horizontal=True,
        key="map_scope",
        format_func={
            "all": "all probed items",
            "preserved": "preserved only (retain + holdout outside the selection)",
        }.get,
    )
    p = D.preserved_probes(h, probes, run["forget_concepts"] or []) if scope == "preserved" else probes
    cmap = D.collateral_map(h, p)
    st.plotly_chart(D.collateral_figure(h, cmap, run["forget_concepts"] or []), width="stretch", key="collateral")
    st.caption(
        ":red[red] = accuracy dropped · :blue[blue] = kept or improved · outlined = forget target. "
        "Segment size = number of probed items."
    )
    with st.expander("Per-concept table"):
        st.dataframe(
            cmap,
            hide_index=True,
            width="stretch",
            column_config={
                "acc_before": st.column_config.NumberColumn(format="percent"),
                "acc_after": st.column_config.NumberColumn(format="percent"),
                "change_pts": st.column_config.NumberColumn("change (pts)", format="%+.1f"),
            },
        )

with tab_q:
    q = D.per_question(probes)
    f1, f2, f3 = st.columns(3)
    concepts = sorted(x for x in q["concept_id"].dropna().unique() if x)
    fc = f1.multiselect("Concept", concepts, key="q_concepts", format_func=lambda c: h.concept(c).name if c in h else c)
    fs = f2.multiselect("Split", ["forget", "retain", "holdout"], key="q_splits")
    ch = f3.selectbox(
        "Answer",
        ["all", "changed", "unchanged", "lost", "gained"],
        key="q_change",
        help="lost: correct before, wrong after; gained: the reverse",
    )
    shown = D.filter_questions(q, fc, fs, ch)
    st.caption(f"{len(shown):,} of {len(q):,} questions")
    st.dataframe(shown, hide_index=True, width="stretch", height=420)

with tab_mia:
    a, b = st.columns(2)
    a.metric("MIA AUC before", fmt.APP.fixed(m.get("mia_auc_before")), border=True)
    b.metric(
        "MIA AUC after",
        fmt.APP.fixed(m.get("mia_auc")),
        border=True,
        help="0.5: forget items look like never-seen holdout items",
    )
    st.plotly_chart(D.mia_figure(probes), width="stretch", key="mia")

with tab_gen:
    g = D.generations_side_by_side(store.generations(rid))
    if g.empty:
        st.caption("No generation probes stored for this run.")
    for _, r in g.iterrows():
        with st.container(border=True):
            st.markdown(f"**{r['split']}** · {r['prompt']}")
            x, y = st.columns(2)
            x.markdown("*Before*")
            x.text(r["before"] or "")
            y.markdown("*After*")
            y.text(r["after"] or "")

with tab_gone:
    rate = st.column_config.NumberColumn(format="percent")
    pts = st.column_config.NumberColumn("change (pts)", format="%+.1f")
    acc_cols = {"before": rate, "unlearned": rate, "attacked": rate, "change_pts": pts}
    st.caption(
        "Forget accuracy of the original model (before), the unlearned model, and the unlearned model "
        "under each attack: relearning, quantized weights, other question formats (docs/method.md)."
    )
    shown = [(rid, m)] + ([(other, _metrics(db, other))] if other else [])
    for col, (run_id, metrics) in zip(st.columns(len(shown)), shown):
        col.markdown(f"**{run_id}**")
        if not gone.has_attacks(metrics):
            col.caption("No attacks ran with this run (`run --attacks all`, or `bench --attacks all`).")
            continue
        col.dataframe(gone.gone_table(metrics), hide_index=True, width="stretch", column_config=acc_cols)
        col.dataframe(gone.membership_table(metrics), hide_index=True, width="stretch")
        col.dataframe(gone.verdict_table(metrics), hide_index=True, width="stretch")
    bench = gone.latest_attack_bench(store.bench_results())
    if not bench.empty:
        st.markdown(f"###### Every method of bench {bench['bench_id'].iloc[0]}")
        probe = st.selectbox("Attack", gone.probe_names(bench), key="gone_probe")
        st.dataframe(gone.methods_side_by_side(bench, probe), hide_index=True, width="stretch", column_config=acc_cols)
