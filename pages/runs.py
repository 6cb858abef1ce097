import streamlit as st

from hdsu_core import dashboard as D
from hdsu_core import fmt, jobs
from hdsu_core.security.roles import PermissionDenied
from hdsu_core.store import ACTIVE_STATUSES, RUN_STATUSES, TERMINAL_STATUSES, RunStatus
from pages import _ui

_ui.header(
    "Runs", "Every unlearning run with its status. Active runs update live; a run keeps going if you close the browser."
)
store = _ui.store()
ss = st.session_state
reaped = jobs.reap(store)
if reaped:
    st.warning(f"Marked {len(reaped)} run(s) as failed: their process is gone (see the reason).", icon="⚠️")


def _cancel(run_id: str) -> None:
    try:
        res = jobs.cancel(run_id, store=store, actor=_ui.actor())
    except PermissionDenied as e:  # the button is disabled; a crafted request still ends here
        res = f"refused: {e}"
    ss["runs_flash"] = f"{run_id}: {res}"


_all = store.list_runs(limit=200)
_live = bool(len(_all)) and bool(_all["status"].isin(ACTIVE_STATUSES).any())


@st.fragment(run_every=2 if _live else None)
def active_runs() -> None:
    if jobs.reap(store):  # a run whose process died while this page is open
        st.rerun()
    runs = store.list_runs(limit=200)
    active = runs[runs["status"].isin(ACTIVE_STATUSES)] if not runs.empty else runs
    if ss.get("runs_flash"):
        st.info(ss.pop("runs_flash"), icon="⏹️")
    if active.empty:
        st.caption("No active runs.")
        if ss.get("runs_had_active"):
            ss["runs_had_active"] = False
            st.rerun()  # refresh the history table once the last run finished
        return
    ss["runs_had_active"] = True
    for _, r in active.iterrows():
        rd = r.to_dict()
        with st.container(border=True):
            a, b = st.columns([4, 1])
            a.markdown(
                f"**{rd['run_id']}** · {D.STATUS_ICONS.get(rd['status'])} · {rd['method']} · "
                f"forget {', '.join(rd['forget_concepts'] or [])} · by {rd.get('author') or '?'}"
            )
            no_cancel = _ui.refusal("cancel", owner=rd.get("author"))
            b.button(
                "Cancel",
                key=f"cancel_{rd['run_id']}",
                on_click=_cancel,
                args=(rd["run_id"],),
                icon="⏹️",
                width="stretch",
                disabled=bool(no_cancel),
                help=no_cancel,
            )
            frac = float(rd.get("progress") or 0.0)
            st.progress(
                min(1.0, max(0.0, frac)),
                text=f"{rd.get('phase') or RunStatus.QUEUED} · {frac:.0%} · elapsed {fmt.duration(D.elapsed_s(rd))}"
                + (f" · {rd['message']}" if rd.get("message") else ""),
            )
            tail = jobs.log_tail(rd["run_id"], lines=12)
            with st.expander("Log", expanded=False):
                st.code(tail or "(no output yet)", language=None)


st.subheader("Active")
active_runs()

st.subheader("History")
runs = _all
table = D.runs_table(runs)
if table.empty:
    st.caption("No runs yet. Launch one from the Unlearn page.")
    _ui.page_link("pages/unlearn.py", label="Set up a run", icon="✂️")
else:
    f1, f2 = st.columns([2, 3])
    statuses = f1.multiselect("Status", [str(s) for s in RUN_STATUSES], key="runs_status", placeholder="all")
    shown = table if not statuses else table[runs["status"].isin(statuses).values]
    st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
            "created": st.column_config.DatetimeColumn("created (UTC)", format="YYYY-MM-DD HH:mm"),
        },
    )
    finished = runs[runs["status"].isin(TERMINAL_STATUSES)]
    if not finished.empty:
        pick = st.selectbox("Inspect a finished run", finished["run_id"].tolist(), key="runs_inspect")
        run = store.get_run(pick)
        if run and run.get("error"):
            st.error(f"Failure reason: {run['error']}", icon="❌")
        if run and run["status"] == RunStatus.DONE:
            for row in D.run_procedure(run):
                st.markdown(f"**{row['label']}:** {row['value']}")
        c1, c2 = st.columns(2)
        if run and run["status"] == RunStatus.DONE:
            if c1.button("Compare this run", icon="📊"):
                ss["compare_run"] = pick
                st.switch_page("pages/compare.py")
        with st.expander("Log tail"):
            st.code(jobs.log_tail(pick, lines=40) or "(no log)", language=None)
