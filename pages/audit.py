import streamlit as st

from hdsu_core import dashboard as D
from pages import _ui

_ui.header("Audit report", "A self-contained record of one run: who launched it, what was forgotten, with which "
           "method and settings, and the measured outcome. Preview it here and download it as HTML or PDF.")
store = _ui.store()
ss = st.session_state

try:
    from hdsu_core.audit import build_html, build_pdf
except ImportError:
    build_html = build_pdf = None

runs = store.list_runs(limit=200)
if runs.empty:
    st.info("No runs yet.", icon="ℹ️")
    st.stop()
finished = runs[runs["status"].isin(["done", "failed", "cancelled"])]
pool = finished if not finished.empty else runs
labels = {r["run_id"]: D.run_label(r) for _, r in pool.iterrows()}
ids = list(labels)
default = ss.get("compare_run") if ss.get("compare_run") in labels else ids[0]
rid = st.selectbox("Run", ids, index=ids.index(default), format_func=labels.get, key="audit_run")

if build_html is None:
    st.warning("The audit report module (hdsu_core.audit) is not available yet; showing the audit trail only.",
               icon="🚧")
else:
    h = _ui.working_hierarchy()
    try:
        html = build_html(store, rid, hierarchy=h)
    except Exception as e:  # noqa: BLE001 - show the reason instead of a traceback
        st.error(f"Could not build the report: {e}", icon="🚫")
        html = None
    if html:
        d1, d2, _ = st.columns([1, 1, 3])
        d1.download_button("Download HTML", html, file_name=f"hdsu-audit-{rid}.html", mime="text/html",
                           icon="⬇️", on_click=store.log_event, args=(_ui.actor(), "download_audit", rid, {"format": "html"}))
        try:
            pdf = build_pdf(store, rid, hierarchy=h)
        except Exception as e:  # noqa: BLE001 - PDF rendering is optional
            d2.caption(f"PDF unavailable: {e}")
        else:
            d2.download_button("Download PDF", pdf, file_name=f"hdsu-audit-{rid}.pdf", mime="application/pdf",
                               icon="⬇️", on_click=store.log_event,
                               args=(_ui.actor(), "download_audit", rid, {"format": "pdf"}))
        with st.container(border=True, height=700):
            st.html(html)

st.subheader("Audit trail")
st.dataframe(store.audit_events(run_id=rid), hide_index=True, width="stretch")
