"""Streamlit glue shared by the pages: the store, identity, caches and the working hierarchy.
Only calls into hdsu_core; no SQL here."""

from __future__ import annotations

import streamlit as st

from hdsu_core import dashboard as D
from hdsu_core import paths, workspace
from hdsu_core.datasets import load_spec
from hdsu_core.hierarchy import Hierarchy
from hdsu_core.security.roles import HIDDEN_PAGES, PermissionDenied, Role, require
from hdsu_core.store import Store, StoreError
from hdsu_core.tagging import Tagger

try:
    from streamlit.runtime.pages_manager import PagesManager
except ImportError:  # pragma: no cover - streamlit internals moved
    PagesManager = None


@st.cache_resource(show_spinner=False)
def _store_for(path: str) -> Store:
    return Store(path)


def store() -> Store:
    """One Store per database path (HDSU_DB / HDSU_HOME are honoured on every call). A database
    that cannot be used (held by another program, on a full or read-only disk) stops the page
    with one clear message instead of a traceback."""
    try:
        return _store_for(str(paths.default_db()))
    except (StoreError, OSError) as e:
        database_error(e)
        st.stop()
        raise  # unreachable: st.stop() ends the script run


def database_error(e: BaseException) -> None:
    st.error(f"The database is not available: {e}", icon="🚫")


def actor() -> str:
    return (st.session_state.get("actor") or "").strip() or "anonymous"


def refusal(permission: str, owner: str | None = None) -> str | None:
    """Why the acting user may not do ``permission`` (None: allowed). Buttons are disabled with it;
    the core refuses a crafted request anyway."""
    try:
        require(store(), actor(), permission, owner=owner)
    except PermissionDenied as e:
        return str(e)
    return None


def _ensure_app_shell() -> None:
    """A page opened by URL (e.g. /compare) as the first request after the server started runs in
    Streamlit's legacy ``pages/`` mode: app.py is skipped (no name field, file-name navigation
    listing ``_ui``). Turn that mode off and rerun, so the request goes through app.py. Only when
    app.py has never run in this session (it sets ``actor``), so no widget event is dropped."""
    if "actor" in st.session_state or PagesManager is None:
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


def header(title: str, caption: str) -> None:
    _ensure_app_shell()
    st.title(title)
    st.caption(caption)
    if st.session_state.get("identity_mode", "demo") == "demo":  # labelled on every page
        st.warning(
            "**Demo mode**: no accounts yet, so everyone acts as the local admin. Add accounts with "
            "`python -m hdsu_core users add NAME --role admin` (see README, *Identity*).",
            icon="🧪",
        )


# ---- datasets and tagging (cached by file mtime and hierarchy content) --------------------------
@st.cache_resource(show_spinner="Loading dataset…", max_entries=8)
def _items(spec: str, mtime: float):
    return load_spec(spec).items


def items(spec: str):
    return _items(spec, D.spec_mtime(spec))


@st.cache_resource(show_spinner="Tagging items with concepts…", max_entries=16)
def _tags(spec: str, mtime: float, hkey: str, _h: Hierarchy):
    return Tagger(_h).tag_all(_items(spec, mtime))


def tags(spec: str, h: Hierarchy, hkey: str | None = None):
    return _tags(spec, D.spec_mtime(spec), hkey or D.hierarchy_key(h), h)


# ---- working hierarchy (per session) -------------------------------------------------------------
def working_hierarchy(reload: bool = False) -> Hierarchy:
    """The session's working copy: latest stored version, or data/hierarchy.json."""
    ss = st.session_state
    if reload or "hierarchy" not in ss:
        h, vid = workspace.load_working(store())
        ss["hierarchy"] = h
        ss["hierarchy_base"] = vid
        ss["hierarchy_dirty"] = False
        ss["hierarchy_key"] = D.hierarchy_key(h)
    return ss["hierarchy"]


def set_working(h: Hierarchy) -> None:
    st.session_state["hierarchy"] = h
    st.session_state["hierarchy_dirty"] = True
    st.session_state["hierarchy_key"] = D.hierarchy_key(h)


def working_key() -> str:
    working_hierarchy()
    return st.session_state["hierarchy_key"]


@st.cache_resource(show_spinner=False, max_entries=8)
def _saved_hierarchy(db: str, version: int | None) -> Hierarchy:
    return workspace.base_hierarchy(store(), version)


def saved_hierarchy() -> tuple[Hierarchy, int | None]:
    """The saved hierarchy the session's working copy is based on (what a run uses)."""
    working_hierarchy()
    vid = st.session_state.get("hierarchy_base")
    return _saved_hierarchy(str(paths.default_db()), vid), vid


def selection() -> list[str]:
    return list(st.session_state.get("forget_selection") or [])


def set_selection(sel: list[str]) -> None:
    st.session_state["forget_selection"] = list(sel)


def metric_card_row(cards: list[dict], cols_per_row: int = 6) -> None:
    cols = st.columns(min(cols_per_row, len(cards)))
    for i, c in enumerate(cards):
        with cols[i % len(cols)]:
            st.metric(
                c["label"],
                c["value"],
                delta=c.get("delta"),
                delta_color=c.get("delta_color", "normal"),
                help=c.get("help"),
                border=True,
            )


# ---- a run's model output -------------------------------------------------------------------------
def model_downloads(store, run_id: str, key: str) -> None:
    """Download buttons for a run's unlearned model (zipped Hugging Face directory), its sparse
    delta and its receipt. The files are made when the button is clicked, and each download is
    an audit event."""
    from hdsu_core.artifacts import actions  # lazy: torch
    from hdsu_core.artifacts import run_models as RM  # lazy: torch

    if store.get_run_model(run_id) is None:
        st.caption("No receipt for this run (it did not finish, or finished before receipts existed).")
        return
    try:
        rm = RM.get_run_model(store, run_id)
    except RM.RunModelError as e:
        st.error(str(e), icon="🚫")
        return
    has_files = rm.receipt.get("delta") is not None and not rm.files_deleted
    may_export = refusal("export_model") is None
    who = actor()
    exportable = has_files and may_export
    buttons = [  # label, bytes made on click, file suffix, mime, icon, enabled, help
        (
            "Unlearned model (zip)",
            actions.model_zip,
            "model.zip",
            "application/zip",
            "📦",
            exportable,
            "A Hugging Face directory (safetensors + tokenizer) that transformers loads without HDSU",
        ),
        (
            "Sparse delta",
            actions.delta_bytes,
            "delta.safetensors",
            "application/octet-stream",
            "🧩",
            exportable,
            "Changed weights only: flat indices, old and new values per tensor",
        ),
        (
            "Receipt (JSON)",
            actions.receipt_bytes,
            "receipt.json",
            "application/json",
            "🧾",
            True,
            "Hashes of both models, the delta, the data, the hierarchy and the code",
        ),
    ]
    for col, (label, make, suffix, mime, icon, enabled, help_text) in zip(st.columns(3), buttons):
        col.download_button(
            label,
            data=lambda make=make: make(store, run_id, actor=who),
            file_name=f"hdsu-{run_id}-{suffix}",
            mime=mime,
            icon=icon,
            disabled=not enabled,
            on_click="ignore",
            key=f"{key}_{suffix.split('.')[0]}_{run_id}",
            help=help_text,
        )
    if not has_files:
        st.caption("The model files of this run were deleted or not kept; the receipt remains.")


def page_link(path: str, **kw) -> None:
    """``st.page_link`` for a page the acting user's role can open (hidden pages are not in the
    navigation, and a link to one would fail)."""
    role = Role(st.session_state.get("role", Role.ADMIN))
    if path.removeprefix("pages/").removesuffix(".py") not in HIDDEN_PAGES[role]:
        st.page_link(path, **kw)
