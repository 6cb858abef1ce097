"""HDSU Studio: page config, identity and navigation. Everything else lives in pages/ and hdsu_core/."""

import streamlit as st

from hdsu_core.store import StoreError
from pages import _ui

st.set_page_config(page_title="HDSU Studio", page_icon="🧠", layout="wide")

pages = {
    "Studio": [
        st.Page("pages/overview.py", title="Overview", icon="🏠", default=True),
        st.Page("pages/hierarchy.py", title="Hierarchy", icon="🌳"),
        st.Page("pages/unlearn.py", title="Unlearn", icon="✂️"),
    ],
    "Results": [
        st.Page("pages/runs.py", title="Runs", icon="⏱️"),
        st.Page("pages/compare.py", title="Compare", icon="📊"),
        st.Page("pages/models.py", title="Models", icon="📦"),
        st.Page("pages/audit.py", title="Audit report", icon="🧾"),
    ],
}
page = st.navigation(pages)

# ---- identity: recorded with every action (launch, cancel, save, import) ----------------------
if "actor" not in st.session_state:
    default = ""
    try:
        if st.user.is_logged_in:
            default = str(st.user.get("name") or st.user.get("email") or "")
    except Exception:  # noqa: BLE001 - no auth configured
        default = ""
    st.session_state["actor"] = default
if "actor_input" not in st.session_state:
    st.session_state["actor_input"] = st.session_state["actor"]
with st.sidebar:
    st.markdown("### 🧠 HDSU Studio")
    name = st.text_input(
        "Your name",
        key="actor_input",
        placeholder="who is acting?",
        help="Recorded in the audit trail with every action.",
    )
    st.session_state["actor"] = name.strip()
    if not st.session_state["actor"]:
        st.caption("⚠️ No name given: actions are recorded as **anonymous**.")
    else:
        st.caption(f"Acting as **{st.session_state['actor']}**")


try:
    page.run()
except StoreError as e:  # the database became unavailable mid-page (full disk, held by another program)
    _ui.database_error(e)
