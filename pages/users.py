import streamlit as st

from hdsu_core.security import accounts
from hdsu_core.security.roles import DESCRIPTIONS, PermissionDenied, Role
from pages import _ui

_ui.header(
    "Users",
    "Local accounts and their roles. Every change is an audit event. Users who sign in through "
    "OpenID Connect get their role from the ID token's `hdsu_role` claim, or from this list.",
)
store = _ui.store()
why = _ui.refusal("manage_users")
if why:
    st.error(f"Refused: {why}", icon="🚫")
    st.stop()

st.dataframe(store.list_users(), hide_index=True, width="stretch")
st.caption(" · ".join(f"**{r.value}**: {DESCRIPTIONS[r]}" for r in Role))

with st.form("user_form"):
    c1, c2, c3 = st.columns(3)
    name = c1.text_input("User name", key="user_name")
    role = c2.selectbox("Role", [r.value for r in Role], key="user_role")
    password = c3.text_input("Password (empty: keep / none, e.g. an OIDC user)", type="password", key="user_pw")
    go = st.form_submit_button("Add or change user", type="primary", icon="👤")
if go:
    try:
        accounts.set_user(store, _ui.actor(), name.strip(), role, password or None)
    except (ValueError, PermissionDenied) as e:
        st.error(str(e), icon="🚫")
    else:
        st.success(f"{name.strip()}: {role}", icon="✅")
        st.rerun()

with st.form("disable_form"):
    who = st.text_input("Disable user", key="disable_name")
    if st.form_submit_button("Disable", icon="⛔"):
        try:
            accounts.disable_user(store, _ui.actor(), who.strip())
        except (ValueError, PermissionDenied) as e:
            st.error(str(e), icon="🚫")
        else:
            st.success(f"{who.strip()} disabled", icon="⛔")
