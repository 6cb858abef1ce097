"""HDSU Studio: page config, identity and role-aware navigation. Everything else lives in pages/ and hdsu_core/."""

import streamlit as st

from hdsu_core.security.roles import HIDDEN_PAGES, PermissionDenied
from hdsu_core.store import StoreError
from pages import _identity, _ui

st.set_page_config(page_title="HDSU Studio", page_icon="🧠", layout="wide")
try:
    store = _ui.store()
    role = _identity.sign_in(store)
except StoreError as e:  # the database cannot be opened (unwritable home, full disk, held by another program)
    _ui.database_error(e)
    st.stop()
if role is None:  # the login is on screen
    st.stop()

PAGES = {
    "Studio": [
        ("overview", "Overview", "🏠"),
        ("hierarchy", "Hierarchy", "🌳"),
        ("unlearn", "Unlearn", "✂️"),
    ],
    "Results": [
        ("runs", "Runs", "⏱️"),
        ("compare", "Compare", "📊"),
        ("compare_runs", "Compare runs", "🧮"),
        ("benchmarks", "Benchmarks", "🏁"),
        ("models", "Models", "📦"),
        ("audit", "Audit report", "🧾"),
    ],
    "Admin": [("users", "Users", "👥")],
}
pages = {
    group: [
        st.Page(f"pages/{name}.py", title=title, icon=icon, default=name == "overview")
        for name, title, icon in entries
        if name not in HIDDEN_PAGES[role]
    ]
    for group, entries in PAGES.items()
}
page = st.navigation({g: p for g, p in pages.items() if p})
with st.sidebar:
    st.markdown("### 🧠 HDSU Studio")
_identity.sidebar(role)
try:
    page.run()
except PermissionDenied as e:  # a crafted request past a disabled button: the core refused it
    st.error(f"Refused: {e}", icon="🚫")
except StoreError as e:  # the database became unavailable mid-page (full disk, held by another program)
    _ui.database_error(e)
