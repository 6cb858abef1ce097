"""Identity and roles in the dashboard (AppTest): demo mode labelled on every page, the local
login form (wrong password refused and logged), and an auditor who cannot launch, cancel, edit or
export through the pages, neither by the navigation nor by going to the page directly."""

from __future__ import annotations

import pytest
from test_app import PAGES, app

from hdsu_core.engine import RunConfig
from hdsu_core.lifecycle import create_run, execute_run
from hdsu_core.security import accounts
from hdsu_core.store import Store

QUICK = {"method": "grad_ascent", "settings": {"max_steps": 2}, "n_generations": 2}


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    monkeypatch.setenv("HDSU_DB", str(tmp_path / "h.duckdb"))  # the model cache stays shared
    return Store()


@pytest.fixture
def with_accounts(store) -> Store:
    accounts.set_user(store, "setup", "head", "admin", "head-pass-1")
    accounts.set_user(store, "head", "alice", "clinician", "alice-pass-1")
    accounts.set_user(store, "head", "eve", "auditor", "eve-pass-123")
    return store


def test_demo_mode_is_labelled_on_every_page(store):
    for page in PAGES:
        at = app(page)
        assert any("Demo mode" in w.value for w in at.warning), page


def test_local_login_refuses_a_wrong_password_and_logs_it(with_accounts):
    at = app()
    assert not at.title or at.title[0].value == "HDSU Studio"
    at.text_input(key="login_user").input("alice")
    at.text_input(key="login_password").input("not-her-password")
    at.button(key="FormSubmitter:login_form-Sign in").click().run()
    assert any("wrong user name or password" in e.value for e in at.error)
    at.text_input(key="login_password").input("alice-pass-1")
    at.button(key="FormSubmitter:login_form-Sign in").click().run()
    assert not at.exception and at.session_state["actor"] == "alice"
    assert any("role **clinician**" in c.value for c in at.sidebar.caption)
    ev = with_accounts.audit_events()
    assert list(ev[ev.actor == "alice"]["action"])[::-1] == ["login_failed", "login"]


def test_an_auditor_cannot_act_through_the_pages(with_accounts):
    s = with_accounts
    done = create_run(s, RunConfig(forget=["anxiety"], **QUICK), author="alice")
    execute_run(s, done, executor="cli")
    queued = create_run(s, RunConfig(forget=["depression"], **QUICK), author="alice")
    auditor = {"actor": "eve", "role": "auditor"}
    at = app("runs", auditor)
    cancel = at.button(key=f"cancel_{queued}")
    assert cancel.disabled
    at = app("models", auditor)
    assert at.button(key=f"del_{done}").disabled
    downloads = {b.label: b for b in at.get("download_button")}
    assert downloads["Unlearned model (zip)"].disabled and downloads["Sparse delta"].disabled
    assert not downloads["Receipt (JSON)"].disabled  # reading stays open to auditors
    # going to Unlearn or Users directly: not in an auditor's navigation, so not served
    for page in ("unlearn", "users"):
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            app("overview", auditor).switch_page(f"pages/{page}.py")
    assert len(s.list_runs()) == 2 and s.get_run(queued)["status"] == "queued"


def test_a_clinician_sees_the_unlearn_page_but_not_users_and_an_admin_manages_users(with_accounts):
    at = app("unlearn", {"actor": "alice", "role": "clinician"})
    assert not at.exception and any(b.key == "launch" for b in at.button)
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        app("overview", {"actor": "alice", "role": "clinician"}).switch_page("pages/users.py")
    at = app("users", {"actor": "head", "role": "admin"})
    assert set(at.dataframe[0].value["username"]) == {"head", "alice", "eve"}
    at.text_input(key="user_name").input("bob")
    at.selectbox(key="user_role").set_value("auditor")
    at.text_input(key="user_pw").input("bob-pass-123")
    at.button(key="FormSubmitter:user_form-Add or change user").click().run()
    assert not at.exception and with_accounts.get_user("bob")["role"] == "auditor"
    ev = with_accounts.audit_events()
    assert ((ev.action == "user_added") & (ev.actor == "head")).any()
