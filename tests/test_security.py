"""Audit integrity and protection: the hash-chained audit log (each tamper kind), chain heads
pinned in signed receipts, Ed25519 signatures of receipts and reports, roles enforced in the core
functions, local accounts and the CLI identity."""

from __future__ import annotations

import stat
from pathlib import Path

import duckdb
import pytest

from hdsu_core import jobs, workspace
from hdsu_core import store as store_module
from hdsu_core.artifacts import run_models as RM
from hdsu_core.artifacts.actions import export_run_model, rollback_run_model
from hdsu_core.audit_chain import verify_rows
from hdsu_core.cli import main
from hdsu_core.engine import RunConfig
from hdsu_core.hierarchy import load_default
from hdsu_core.lifecycle import create_run, execute_run
from hdsu_core.security import accounts, keys
from hdsu_core.security.integrity import verify_audit
from hdsu_core.security.roles import PermissionDenied, Role, os_user, role_of
from hdsu_core.store import Store

QUICK = {"method": "grad_ascent", "settings": {"max_steps": 2}, "n_generations": 2}


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "h.duckdb")


def events(store: Store, n: int = 6) -> None:
    for i in range(n):
        store.log_event("alice", "save_hierarchy", None, {"i": i})


def sql(store: Store, statement: str, params=()) -> None:
    con = duckdb.connect(str(store.path))
    con.execute(statement, list(params))
    con.close()


def cli(store: Store, capsys, *args: str) -> tuple[int, str]:
    code = main([*args, "--db", str(store.path)])
    out = capsys.readouterr()
    return code, out.out + out.err


def quick_run(store: Store, author: str, forget=("anxiety",)) -> str:
    run_id = create_run(store, RunConfig(forget=list(forget), **QUICK), author=author)
    execute_run(store, run_id, executor="cli")
    return run_id


# ---- the hash chain ---------------------------------------------------------------------------


def test_an_untouched_log_verifies(store, capsys):
    events(store)
    code, out = cli(store, capsys, "audit", "verify")
    assert code == 0 and "intact: 6 events" in out
    assert store.audit_chain_head()["event_id"] == 6


@pytest.mark.parametrize(
    "tamper, broken_at, reason",
    [
        ("UPDATE audit_events SET actor = 'mallory' WHERE event_id = 3", 3, "edited"),
        ("UPDATE audit_events SET details_json = '{\"i\": 99}' WHERE event_id = 4", 4, "edited"),
        ("DELETE FROM audit_events WHERE event_id = 2", 3, "deleted"),
        # reorder: events 2 and 3 swap places (ids kept in order, contents and hashes swapped)
        (
            "UPDATE audit_events SET event_id = CASE event_id WHEN 2 THEN 3 ELSE 2 END WHERE event_id IN (2, 3)",
            2,
            "link",
        ),
    ],
)
def test_each_tamper_breaks_the_chain_at_its_event(store, capsys, tamper, broken_at, reason):
    events(store)
    sql(store, tamper)
    report = verify_rows(store.audit_chain_rows())
    assert not report.ok and report.broken_at == broken_at and reason in report.reason
    code, out = cli(store, capsys, "audit", "verify")
    assert code == 1 and f"BROKEN at event {broken_at}" in out


def test_an_inserted_event_breaks_the_chain(store, capsys):
    events(store)
    sql(store, "UPDATE audit_events SET event_id = event_id + 1 WHERE event_id >= 4")
    forged = "INSERT INTO audit_events VALUES (4, now(), 'mallory', 'launch_run', NULL, '{}', ?, ?)"
    sql(store, forged, [store.audit_event_hash(3), "f" * 64])
    report = verify_rows(store.audit_chain_rows())
    assert not report.ok and report.broken_at == 4


def test_a_rewritten_tail_is_caught_by_the_head_a_receipt_pinned(store, capsys):
    run_id = quick_run(store, "alice")
    pinned = RM.get_run_model(store, run_id).receipt["audit_chain_head"]
    assert pinned["event_id"] >= 1 and pinned["hash"] == store.audit_event_hash(pinned["event_id"])
    # Mallory drops the events since the launch and recomputes a valid chain over the rest.
    rows = store.audit_chain_rows()[: pinned["event_id"] - 1]
    sql(store, "DELETE FROM audit_events")
    con = duckdb.connect(str(store.path))
    prev = store_module.GENESIS
    for event_id, ts, actor, action, run, details, _, _ in rows:
        own = store_module.event_hash(event_id, ts, actor, action, run, details, prev)
        con.execute(
            "INSERT INTO audit_events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [event_id, ts, actor, action, run, details, prev, own],
        )
        prev = own
    con.close()
    assert verify_rows(store.audit_chain_rows()).ok  # the chain alone looks fine ...
    report = verify_audit(store)
    assert not report.ok and any(
        f"receipt of run {run_id} pinned" in p for p in report.problems
    )  # ... the pin does not


def test_events_written_before_the_chain_get_hashes_on_upgrade(tmp_path, monkeypatch):
    old = [m for m in store_module.MIGRATIONS if m[0] <= 2]
    monkeypatch.setattr(store_module, "MIGRATIONS", old)
    path = tmp_path / "old.duckdb"
    Store(path)
    con = duckdb.connect(str(path))
    for i in range(3):  # the old way of logging: sequence ids, no hashes
        con.execute(
            "INSERT INTO audit_events (ts, actor, action, details_json) VALUES (now(), 'a', 'x', ?)", [f'{{"i": {i}}}']
        )
    con.close()
    monkeypatch.undo()
    upgraded = Store(path)
    upgraded.log_event("b", "y")
    report = verify_rows(upgraded.audit_chain_rows())
    assert report.ok and report.length == 4


def test_the_log_verifies_after_runs_exports_and_rollbacks(store, tmp_path, capsys):
    run_id = quick_run(store, "alice")
    out = export_run_model(store, run_id, "hf", tmp_path / "m", actor="alice")
    rollback_run_model(store, run_id, tmp_path / "orig", source=out, actor="alice")
    actions = set(store.audit_events()["action"])
    assert {"launch_run", "run_done", "model_export", "model_rollback"} <= actions
    assert verify_audit(store).ok
    code, text = cli(store, capsys, "audit", "verify")
    assert code == 0, text


# ---- signatures --------------------------------------------------------------------------------


def test_receipts_are_signed_and_one_changed_byte_fails(store, tmp_path, capsys):
    run_id = quick_run(store, "alice")
    path = Path(RM.get_run_model(store, run_id).files_dir) / RM.RECEIPT_FILE
    key_file = tmp_path / "pub.pem"
    assert main(["audit", "public-key", "--out", str(key_file)]) == 0
    capsys.readouterr()
    assert main(["audit", "verify-receipt", str(path), "--public-key", str(key_file)]) == 0
    assert "verified" in capsys.readouterr().out
    data = path.read_bytes()
    i = data.index(b'"actor":"alice"') + len(b'"actor":"a')
    changed = tmp_path / "changed.json"
    changed.write_bytes(data[:i] + b"A" + data[i + 1 :])  # alice -> aAice
    assert main(["audit", "verify-receipt", str(changed), "--public-key", str(key_file)]) == 1
    assert "NOT VERIFIED" in capsys.readouterr().out
    other = tmp_path / "other.pem"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert main(["audit", "verify-receipt", str(path), "--public-key", str(other)]) == 1
    assert "another key" in capsys.readouterr().out


def test_reports_are_signed_beside_the_file(store, tmp_path, capsys):
    run_id = quick_run(store, "alice")
    out = tmp_path / "r.html"
    assert main(["audit", "report", run_id, "--out", str(out), "--db", str(store.path)]) == 0
    assert Path(f"{out}.sig").exists()
    assert main(["audit", "verify-receipt", str(out)]) == 0
    out.write_bytes(out.read_bytes().replace(b"</html>", b"<!-- x --></html>"))
    assert main(["audit", "verify-receipt", str(out)]) == 1


def test_reports_pin_the_chain_head_of_the_log_and_of_the_receipt(store, tmp_path):
    run_id = quick_run(store, "alice")
    pinned = RM.get_run_model(store, run_id).receipt["audit_chain_head"]
    before = store.audit_chain_head()
    out = tmp_path / "r.html"
    assert main(["audit", "report", run_id, "--out", str(out), "--db", str(store.path)]) == 0
    html = out.read_text()
    assert f"event {before['event_id']} · {before['hash']}" in html  # the head when the report was made
    assert f"event {pinned['event_id']} · {pinned['hash']}" in html  # the head the signed receipt pinned
    assert store.audit_chain_head()["event_id"] > before["event_id"]  # the export itself was logged


def test_the_key_is_owner_only():
    keys.private_key()
    path = keys.key_dir() / "installation_ed25519.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.key_dir().stat().st_mode) == 0o700


# ---- roles -------------------------------------------------------------------------------------


@pytest.fixture
def accounts_store(store) -> Store:
    accounts.set_user(store, "anyone", "head", "admin", "head-pass-1")  # demo mode: the first admin
    accounts.set_user(store, "head", "alice", "clinician", "alice-pass-1")
    accounts.set_user(store, "head", "bob", "clinician", "bob-pass-12")
    accounts.set_user(store, "head", "eve", "auditor", "eve-pass-123")
    return store


def test_demo_mode_and_the_first_account(store):
    assert role_of(store, "whoever") is Role.ADMIN  # no accounts: demo mode, one local admin
    with pytest.raises(PermissionDenied, match="first account must be an admin"):
        accounts.set_user(store, "x", "alice", "clinician", "alice-pass-1")
    accounts.set_user(store, "x", "root", "admin", "root-pass-1")
    assert role_of(store, "whoever") is None and role_of(store, "root") is Role.ADMIN


def test_an_auditor_is_refused_by_every_core_function_that_changes_state(accounts_store, tmp_path):
    s = accounts_store
    run_id = quick_run(s, "alice")
    h = load_default()
    refused = {
        "launch": lambda: create_run(s, RunConfig(forget=["anxiety"], **QUICK), author="eve"),
        "cancel": lambda: jobs.cancel(run_id, store=s, actor="eve"),
        "save hierarchy": lambda: workspace.save_hierarchy(s, h, None, "eve", "x"),
        "import": lambda: workspace.import_icd10_branch(s, h, h, "add", actor="eve", icd_range="F40"),
        "upload": lambda: workspace.record_upload(s, h, actor="eve", file_name="h.json"),
        "export": lambda: export_run_model(s, run_id, "hf", tmp_path / "m", actor="eve"),
        "rollback": lambda: rollback_run_model(s, run_id, tmp_path / "o", source=None, actor="eve"),
        "delete files": lambda: RM.delete_run_files(s, run_id, "eve"),
        "manage users": lambda: accounts.set_user(s, "eve", "eve", "admin", "eve-pass-123"),
    }
    n_runs, n_events = len(s.list_runs()), len(s.audit_events())
    for call in refused.values():
        with pytest.raises(PermissionDenied, match="auditor"):
            call()
    assert len(s.list_runs()) == n_runs and len(s.audit_events()) == n_events  # nothing written
    assert not (tmp_path / "m").exists() and not RM.get_run_model(s, run_id).files_deleted
    with pytest.raises(PermissionDenied, match="no active account"):
        create_run(s, RunConfig(forget=["anxiety"], **QUICK), author="stranger")


def test_a_clinician_cancels_only_own_runs(accounts_store):
    s = accounts_store
    run_id = create_run(s, RunConfig(forget=["anxiety"], **QUICK), author="alice")
    with pytest.raises(PermissionDenied, match="only the run's author"):
        jobs.cancel(run_id, store=s, actor="bob")
    assert jobs.cancel(run_id, store=s, actor="alice") == "cancelled"


def test_local_login_logs_both_outcomes(accounts_store):
    s = accounts_store
    with pytest.raises(accounts.LoginFailed):
        accounts.login(s, "alice", "wrong-password")
    assert accounts.login(s, "alice", "alice-pass-1") is Role.CLINICIAN
    ev = s.audit_events()
    assert ((ev.action == "login_failed") & (ev.actor == "alice")).any()
    assert ((ev.action == "login") & (ev.actor == "alice")).any()
    row = s.get_user("alice")
    assert row["password_hash"].startswith("$argon2id$") and "alice-pass-1" not in row["password_hash"]


def test_the_cli_acts_as_the_os_user(accounts_store, capsys):
    s = accounts_store
    code, out = cli(s, capsys, "run", "--forget", "anxiety", "--author", "alice", "--quiet")
    assert code == 1 and f"acts as the OS user {os_user()!r}" in out
    code, out = cli(s, capsys, "users", "add", "x", "--role", "admin", "--no-password")
    assert code == 1 and "no active account" in out  # the OS user has no account here
    accounts.set_user(s, "head", os_user(), "auditor", None)
    code, out = cli(s, capsys, "run", "--forget", "anxiety", "--quiet")
    assert code == 1 and "auditor" in out


def test_oidc_users_get_their_role_from_the_claim_or_the_mapping(accounts_store):
    s = accounts_store
    assert accounts.oidc_login(s, "dora@example.org", "auditor") is Role.AUDITOR
    assert role_of(s, "dora@example.org") is Role.AUDITOR
    with pytest.raises(accounts.LoginFailed, match="no role"):
        accounts.oidc_login(s, "nobody@example.org", None)
