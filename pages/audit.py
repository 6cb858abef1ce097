import streamlit as st

from hdsu_core import dashboard as D
from hdsu_core.audit import build_html, build_pdf, record_download
from hdsu_core.security import keys
from hdsu_core.security.integrity import verify_audit
from hdsu_core.store import TERMINAL_STATUSES
from pages import _ui

_ui.header(
    "Audit report",
    "A self-contained record of one run: who launched it, what was forgotten, with which "
    "method and settings, and the measured outcome. Preview it here and download it as HTML or PDF.",
)
store = _ui.store()
ss = st.session_state

integrity = verify_audit(store)
with st.container(border=True):
    c1, c2 = st.columns([4, 1])
    if integrity.ok:
        c1.success(integrity.chain.line(), icon="🔗")
    else:
        c1.error("Audit log integrity: " + " · ".join(integrity.lines()), icon="🚨")
    c2.download_button(
        "Public key",
        keys.public_key_pem(),
        file_name="hdsu-installation-ed25519.pub.pem",
        mime="application/x-pem-file",
        icon="🔑",
        on_click="ignore",
        help="Verify receipts and reports offline: python -m hdsu_core audit verify-receipt FILE --public-key KEY",
    )


@st.cache_data(show_spinner="Rendering the report…", max_entries=16)
def _preview(db: str, run_id: str, n_events: int, status: str) -> str:
    return build_html(store, run_id, None, log=False)


runs = store.list_runs(limit=200)
if runs.empty:
    st.info("No runs yet.", icon="ℹ️")
    st.stop()
finished = runs[runs["status"].isin(TERMINAL_STATUSES)]
pool = finished if not finished.empty else runs
labels = {r["run_id"]: D.run_label(r) for _, r in pool.iterrows()}
ids = list(labels)
if ss.get("audit_run") not in labels:
    ss["audit_run"] = ss.get("compare_run") if ss.get("compare_run") in labels else ids[0]
rid = st.selectbox("Run", ids, format_func=labels.get, key="audit_run")
events = store.audit_events(run_id=rid)
run = store.get_run(rid)

try:
    html = _preview(str(store.path), rid, len(events), run["status"])
except Exception as e:  # noqa: BLE001 - show the reason instead of a traceback
    st.error(f"Could not build the report: {e}", icon="🚫")
    html = None
if html:
    d1, d2, _ = st.columns([1, 1, 3])
    d1.download_button(
        "Download HTML",
        html,
        file_name=f"hdsu-audit-{rid}.html",
        mime="text/html",
        icon="⬇️",
        on_click=record_download,
        args=(store, rid, "html", _ui.actor()),
    )
    pdf_key = f"audit_pdf_{rid}"
    if ss.get(pdf_key) is None:
        if d2.button("Prepare PDF", icon="📄"):
            try:
                with st.spinner("Rendering PDF…"):
                    ss[pdf_key] = build_pdf(store, rid, None, actor=_ui.actor())
                st.rerun()
            except Exception as e:  # noqa: BLE001 - PDF rendering needs WeasyPrint's system libraries
                st.error(f"PDF unavailable: {e}", icon="🚫")
    else:
        d2.download_button(
            "Download PDF",
            ss[pdf_key],
            file_name=f"hdsu-audit-{rid}.pdf",
            mime="application/pdf",
            icon="⬇️",
            on_click="ignore",
        )
    with st.container(border=True, height=700):
        st.html(html)

st.subheader("Model output")
_ui.model_downloads(store, rid, key="audit")

st.subheader("Audit trail")
st.dataframe(events, hide_index=True, width="stretch")
