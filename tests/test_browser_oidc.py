"""OpenID Connect login end to end in a real browser: a real OIDC provider (the PyPI package
``oidc-provider-mock``: authorization-code flow, signed ID tokens, discovery document) runs on
127.0.0.1 in this process, the app is served by ``streamlit run`` with an ``[auth]`` section in a
secrets file that points at it, and headless Chromium logs in through Streamlit's own ``st.login``.

The flow: sign in as an auditor (the role comes from the ID token's ``hdsu_role`` claim), see the
role, be refused the Unlearn page both in the navigation and by its direct URL, log out; then sign
in as a clinician and reach the Launch button. Every login is in the audit log.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from server_helpers import CHROMIUM, start_server

from hdsu_core.store import Store

REQUIRED = os.environ.get("HDSU_REQUIRE_BROWSER") == "1"  # set by .ci/run: missing browser = failure
AUDITOR = "audrey@hospital.example"
CLINICIAN = "carl@hospital.example"


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (HDSU_REQUIRE_BROWSER=1)", pytrace=False)
    pytest.skip(f"{reason}; OIDC browser test skipped", allow_module_level=True)


try:
    import oidc_provider_mock
    from playwright import sync_api
except ImportError as e:
    _unavailable(f"{e.name} is not installed (pip install -r requirements.txt)")
if not Path(CHROMIUM).is_file():
    _unavailable(f"Chromium not found at {CHROMIUM} (install the Debian package 'chromium' or set HDSU_CHROMIUM)")

expect = sync_api.expect


def _secrets_toml(provider_url: str) -> str:
    return "\n".join(
        [
            "[auth]",
            'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"',
            f'cookie_secret = "{secrets.token_hex(32)}"',
            'client_id = "hdsu-studio"',
            'client_secret = "test-client-secret"',
            f'server_metadata_url = "{provider_url}/.well-known/openid-configuration"',
            "",
        ]
    )


@pytest.fixture(scope="module")
def provider(monkeypatch_module):
    # the provider and Streamlit's Authlib client both refuse plain http unless told it is a test
    monkeypatch_module.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    users = [
        oidc_provider_mock.User(sub=AUDITOR, claims={"email": AUDITOR, "hdsu_role": "auditor"}),
        oidc_provider_mock.User(sub=CLINICIAN, claims={"email": CLINICIAN, "hdsu_role": "clinician"}),
    ]
    with oidc_provider_mock.run_server_in_thread(port=0, user_claims=users) as srv:
        yield f"http://localhost:{srv.server_port}"


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def app_server(provider, tmp_path_factory):
    home = tmp_path_factory.mktemp("hdsu_oidc_home")
    secrets_file = home / "secrets.toml"
    secrets_file.write_text(_secrets_toml(provider))
    try:
        srv = start_server(home, streamlit_args=("--secrets.files", str(secrets_file)))
    except RuntimeError as e:
        pytest.fail(str(e))
    yield {"url": srv.url, "home": home}
    srv.stop()


@pytest.fixture(scope="module")
def page(app_server):
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"])
        ctx = b.new_context(viewport={"width": 1360, "height": 900})
        ctx.set_default_timeout(60_000)
        yield ctx.new_page()
        b.close()


def _log_in_as(page, url: str, who: str) -> None:
    page.goto(url)
    page.get_by_role("button", name="Log in").click()
    # the provider's authorization form: one button per configured user
    page.wait_for_url(lambda u: "/oauth2/authorize" in u, timeout=60_000)
    page.get_by_role("button", name=who, exact=True).click()
    page.wait_for_url(lambda u: u.startswith(url) and "oauth2callback" not in u, timeout=60_000)
    expect(page.get_by_text(f"Signed in as {who}")).to_be_visible(timeout=60_000)


def _nav_links(page) -> list[str]:
    nav = page.locator('[data-testid="stSidebarNav"]')
    expect(nav).to_be_visible()
    return [t.strip() for t in nav.get_by_role("link").all_inner_texts()]


def test_oidc_login_role_refusal_logout(page, app_server):
    url = app_server["url"]
    page.goto(url)
    expect(page.get_by_role("button", name="Log in")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Sign in with your organisation's account")).to_be_visible()

    _log_in_as(page, url, AUDITOR)
    expect(page.get_by_text("role auditor")).to_be_visible()
    links = _nav_links(page)
    assert "Unlearn" not in " ".join(links) and "Audit report" in " ".join(links), links

    # a direct URL to a page the role does not have: Streamlit serves no such page to this session
    page.goto(f"{url}/unlearn")
    expect(page.get_by_text("role auditor")).to_be_visible(timeout=60_000)
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Page not found")
    assert page.get_by_role("button", name="Launch").count() == 0
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    page.get_by_role("button", name="Log out").click()
    # Streamlit's st.logout is an RP-initiated logout: the provider confirms and sends us back
    page.wait_for_url(lambda u: "/oauth2/end_session" in u, timeout=60_000)
    page.get_by_role("button", name="End session").click()
    page.wait_for_url(lambda u: u.startswith(url), timeout=60_000)
    expect(page.get_by_role("button", name="Log in")).to_be_visible(timeout=60_000)
    page.goto(url)  # the session cookie is gone: a reload still asks for a login
    expect(page.get_by_role("button", name="Log in")).to_be_visible(timeout=60_000)

    _log_in_as(page, url, CLINICIAN)
    expect(page.get_by_text("role clinician")).to_be_visible()
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Unlearn", exact=True).click()
    expect(page.get_by_role("button", name="Launch")).to_be_visible(timeout=60_000)

    events = Store(str(app_server["home"] / "hdsu.duckdb")).audit_events(limit=50)
    logins = set(events.loc[events["action"] == "login", "actor"])
    assert {AUDITOR, CLINICIAN} <= logins, events[["actor", "action"]].to_string()
