"""Roles and what each may do, enforced where state changes (lifecycle, jobs, workspace, the model
actions): the function takes the acting user and refuses with ``PermissionDenied``.

Identity modes: with no account in the store the installation is in **demo mode** (one local
admin: everyone acting is treated as admin, and every page says so); once accounts exist (local,
or signed in through OpenID Connect and recorded on login) each actor's role applies.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    CLINICIAN = "clinician"
    AUDITOR = "auditor"
    ADMIN = "admin"


class PermissionDenied(ValueError):
    """The acting user's role does not allow the action."""


# permission -> roles that have it. Reading (runs, reports, receipts, verify) needs none.
PERMISSIONS: dict[str, frozenset[Role]] = {
    "edit_hierarchy": frozenset({Role.CLINICIAN, Role.ADMIN}),
    "launch": frozenset({Role.CLINICIAN, Role.ADMIN}),
    "cancel": frozenset({Role.CLINICIAN, Role.ADMIN}),  # a clinician cancels only their own runs
    "export_model": frozenset({Role.CLINICIAN, Role.ADMIN}),  # also rollback and deleting files
    "manage_users": frozenset({Role.ADMIN}),
}
DESCRIPTIONS = {
    Role.CLINICIAN: "edit the hierarchy, launch and cancel own runs, export models",
    Role.AUDITOR: "read everything, reports, verify; cannot launch, edit, cancel or export models",
    Role.ADMIN: "everything, and manage users and roles",
}


def demo_mode(store) -> bool:
    return store.user_count() == 0


def role_of(store, actor: str) -> Role | None:
    """The actor's role: admin in demo mode, else the account's (None: no such active account)."""
    if demo_mode(store):
        return Role.ADMIN
    user = store.get_user(str(actor))
    if user is None or user.get("disabled"):
        return None
    return Role(user["role"])


def allowed(store, actor: str, permission: str, *, owner: str | None = None) -> bool:
    try:
        require(store, actor, permission, owner=owner)
    except PermissionDenied:
        return False
    return True


def require(store, actor: str, permission: str, *, owner: str | None = None) -> Role:
    """The actor's role when it has ``permission`` (for ``cancel`` a clinician must own the run:
    ``owner`` is its author); else ``PermissionDenied`` with one line saying why."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")
    role = role_of(store, actor)
    if role is None:
        raise PermissionDenied(f"{actor!r} has no active account here: {permission.replace('_', ' ')} refused")
    if role not in PERMISSIONS[permission]:
        raise PermissionDenied(f"{actor} is {role.value}: a {role.value} may not {permission.replace('_', ' ')}")
    if permission == "cancel" and role is Role.CLINICIAN and owner is not None and owner != actor:
        raise PermissionDenied(f"{actor} is clinician: only the run's author ({owner}) or an admin may cancel it")
    return role


def os_user() -> str:
    import getpass  # lazy: only the CLI asks who runs it

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown-os-user"


def cli_actor(store, given: str | None) -> str:
    """Who a CLI command acts as: the OS user. In demo mode ``--actor NAME`` may label the action
    differently; once accounts exist it may not (it would let anyone act as anyone)."""
    me = os_user()
    if given and given != me and not demo_mode(store):
        raise PermissionDenied(
            f"the CLI acts as the OS user {me!r}; acting as {given!r} is refused while accounts exist"
        )
    return given or me


# Pages a role does not see in the navigation (a page reached anyway still refuses in the core).
HIDDEN_PAGES: dict[Role, frozenset[str]] = {
    Role.CLINICIAN: frozenset({"users"}),
    Role.AUDITOR: frozenset({"unlearn", "users"}),
    Role.ADMIN: frozenset(),
}


def identity_mode(store, oidc_configured: bool) -> str:
    """``oidc`` (Streamlit's st.login with an [auth] section in secrets), ``accounts`` (local
    accounts exist: a login form) or ``demo`` (none: one local admin, labelled on every page)."""
    if oidc_configured:
        return "oidc"
    return "demo" if demo_mode(store) else "accounts"
