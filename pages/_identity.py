"""Streamlit glue for identity: who is acting and with which role, in the three modes of
``security.roles.identity_mode`` (OIDC through st.login, local accounts with a login form, or the
labelled demo mode). Sets ``st.session_state["actor"]`` and ``["role"]``; app.py calls ``sign_in``."""

from __future__ import annotations

import streamlit as st

from hdsu_core.security import accounts
from hdsu_core.security.roles import DESCRIPTIONS, Role, identity_mode, role_of

ss = st.session_state


def oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # noqa: BLE001 - no secrets.toml at all
        return False


def _oidc(store) -> Role | None:
    if not st.user.is_logged_in:
        st.title("HDSU Studio")
        st.info("Sign in with your organisation's account to continue.", icon="🔐")
        st.button("Log in", type="primary", icon="🔑", on_click=st.login, key="oidc_login")
        return None
    name = str(st.user.get("email") or st.user.get("name") or st.user.get("sub"))
    if ss.get("actor") != name or "role" not in ss:
        try:
            ss["role"] = accounts.oidc_login(store, name, st.user.get("hdsu_role"))
        except accounts.LoginFailed as e:
            st.error(str(e), icon="🚫")
            st.button("Log out", on_click=st.logout, key="oidc_logout_denied")
            return None
        ss["actor"] = name
    return Role(ss["role"])


def _login_form(store) -> Role | None:
    if ss.get("actor") and ss.get("role") and role_of(store, ss["actor"]) is not None:
        return role_of(store, ss["actor"])
    st.title("HDSU Studio")
    with st.form("login_form"):
        user = st.text_input("User name", key="login_user")
        password = st.text_input("Password", type="password", key="login_password")
        go = st.form_submit_button("Sign in", type="primary", icon="🔑")
    if go:
        try:
            ss["role"] = accounts.login(store, user.strip(), password)
        except accounts.LoginFailed as e:
            st.error(str(e), icon="🚫")
            return None
        ss["actor"] = user.strip()
        st.rerun()
    return None


def _demo_name() -> None:
    if "actor_input" not in ss:
        ss["actor_input"] = ss.get("actor", "")
    name = st.sidebar.text_input(
        "Your name",
        key="actor_input",
        placeholder="who is acting?",
        help="Recorded in the audit trail with every action.",
    )
    ss["actor"] = name.strip()


def sign_in(store) -> Role | None:
    """The acting user's role (None: not signed in yet, the login is shown: the caller stops)."""
    mode = identity_mode(store, oidc_configured())
    ss["identity_mode"] = mode
    if mode == "oidc":
        return _oidc(store)
    if mode == "accounts":
        return _login_form(store)
    _demo_name()
    ss["role"] = Role.ADMIN
    return Role.ADMIN


def sidebar(role: Role) -> None:
    mode = ss.get("identity_mode")
    with st.sidebar:
        if mode == "demo":
            who = ss.get("actor") or "anonymous"
            st.caption(f"Acting as **{who}** (demo mode: local admin)")
            if not ss.get("actor"):
                st.caption("⚠️ No name given: actions are recorded as **anonymous**.")
            return
        st.caption(f"Signed in as **{ss['actor']}** · role **{role.value}**: {DESCRIPTIONS[role]}")
        if mode == "oidc":
            st.button("Log out", on_click=st.logout, key="logout")
        elif st.button("Log out", key="logout"):
            store_actor = ss.pop("actor", None)
            ss.pop("role", None)
            st.toast(f"{store_actor} signed out")
            st.rerun()
