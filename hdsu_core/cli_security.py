"""User commands of the CLI (local accounts; admins only, or anyone in demo mode to create the
first admin). The CLI acts as the OS user.

    users add NAME --role clinician|auditor|admin [--password-stdin]
    users list
    users disable NAME
"""

from __future__ import annotations

import getpass
import sys

from hdsu_core.cli_common import Parser
from hdsu_core.security import accounts
from hdsu_core.security.roles import cli_actor


def _store(db):
    from hdsu_core.store import Store  # lazy: duckdb and pandas slow the start of every command

    return Store(db)


def _password(a) -> str:
    if a.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"password for {a.name}: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def cmd_users_add(a) -> int:
    store = _store(a.db)
    actor = cli_actor(store, a.actor)
    accounts.set_user(store, actor, a.name, a.role, _password(a) if not a.no_password else None)
    print(f"{a.name}: {a.role}")
    return 0


def cmd_users_list(a) -> int:
    df = _store(a.db).list_users()
    print("no accounts: demo mode (everyone acts as the local admin)" if df.empty else df.to_string(index=False))
    return 0


def cmd_users_disable(a) -> int:
    store = _store(a.db)
    accounts.disable_user(store, cli_actor(store, a.actor), a.name)
    print(f"{a.name}: disabled")
    return 0


def register(sub) -> None:
    up = sub.add_parser("users", help="local accounts and their roles")
    us = up.add_subparsers(dest="sub", required=True, parser_class=Parser)
    x = us.add_parser("add", help="add a user or change their role / password (admin)")
    x.add_argument("name")
    x.add_argument("--role", required=True, choices=("clinician", "auditor", "admin"))
    x.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    x.add_argument("--no-password", action="store_true", help="no local password (a user who signs in via OIDC)")
    x.set_defaults(fn=cmd_users_add)
    x = us.add_parser("list")
    x.set_defaults(fn=cmd_users_list)
    x = us.add_parser("disable", help="disable a user (admin)")
    x.add_argument("name")
    x.set_defaults(fn=cmd_users_disable)
    for p in us.choices.values():
        p.add_argument("--db", help="DuckDB file (default: var/hdsu.duckdb or $HDSU_DB)")
        p.add_argument("--actor", help="who is acting (default: the OS user; another name only in demo mode)")
