"""Local accounts: salted password hashes with argon2id (``argon2-cffi``, the OWASP-recommended
KDF), users and roles managed by an admin, logins recorded in the audit log (failed ones too)."""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from hdsu_core.security.roles import PermissionDenied, Role, demo_mode, require

_HASHER = PasswordHasher()
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 8


class LoginFailed(ValueError):
    """Wrong user name or password (one message for both: no user enumeration)."""


def _check(username: str, role: str, password: str | None) -> Role:
    if not _NAME.match(username or ""):
        raise ValueError(f"user name {username!r}: letters, digits and . _ @ - only, 1-64 characters")
    try:
        r = Role(role)
    except ValueError:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(x.value for x in Role)}") from None
    if password is not None and len(password) < MIN_PASSWORD:
        raise ValueError(f"the password must have at least {MIN_PASSWORD} characters")
    return r


def set_user(store, actor: str, username: str, role: str, password: str | None = None) -> None:
    """Create a user or change their role / password (admin only; in demo mode the first account
    must be an admin, so that somebody can still manage users afterwards)."""
    r = _check(username, role, password)
    require(store, actor, "manage_users")
    if demo_mode(store) and r is not Role.ADMIN:
        raise PermissionDenied("the first account must be an admin (otherwise nobody could manage users)")
    pw_hash = _HASHER.hash(password) if password is not None else None
    existed = store.get_user(username) is not None
    store.upsert_user(
        username,
        r.value,
        pw_hash,
        actor=actor,
        action="user_changed" if existed else "user_added",
        details={"password_set": password is not None},
    )


def disable_user(store, actor: str, username: str) -> None:
    require(store, actor, "manage_users")
    if store.get_user(username) is None:
        raise ValueError(f"unknown user {username!r}")
    store.disable_user(username, actor=actor)


def login(store, username: str, password: str, *, via: str = "form") -> Role:
    """The user's role when the password is right; ``LoginFailed`` otherwise. Both are logged."""
    user = store.get_user(username)
    ok = False
    if user is not None and not user.get("disabled") and user.get("password_hash"):
        try:
            ok = _HASHER.verify(user["password_hash"], password)
        except (VerificationError, InvalidHashError):
            ok = False
    if not ok:
        store.log_event(username or "(empty)", "login_failed", None, {"via": via})
        raise LoginFailed("wrong user name or password")
    store.log_event(username, "login", None, {"via": via, "role": user["role"]})
    return Role(user["role"])


def oidc_login(store, username: str, claimed_role: str | None) -> Role:
    """A user signed in through OpenID Connect: the role from the ID token's claim when it names
    one (recorded, so the core's checks see it), else the admin-managed mapping in the store."""
    if claimed_role:
        r = _check(username, claimed_role, None)
        store.upsert_user(username, r.value, None, actor="oidc", action="oidc_role", details={"claim": claimed_role})
    user = store.get_user(username)
    if user is None or user.get("disabled"):
        store.log_event(username, "login_failed", None, {"via": "oidc", "reason": "no role"})
        raise LoginFailed(f"{username} signed in, but has no role here: ask an admin to add them")
    store.log_event(username, "login", None, {"via": "oidc", "role": user["role"]})
    return Role(user["role"])
