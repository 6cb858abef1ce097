"""Load: 10 browser sessions at once on the real server while a run is in progress, then an app
restart mid-run.

* ``test_ten_sessions_browse_while_a_run_is_in_progress``: 10 Playwright contexts of one headless
  Chromium (async API, one event loop) each open the app and go Overview → Hierarchy → Runs →
  Compare through the sidebar, all at the same time, while a worker executes a run. No page may
  show a Streamlit exception, no page error may reach the browser, the server log holds no
  traceback. The response time of each page (click to its last element shown) is recorded and
  p50 / p95 printed.
* ``test_an_app_restart_mid_run_reattaches_to_the_worker``: the server is killed (SIGKILL) and
  started again on the same state directory; the Runs page of the new server shows the same run
  still progressing, and its Cancel button stops it.

Needs Chromium (``/usr/bin/chromium`` or ``HDSU_CHROMIUM``); skipped with the reason without it
(a failure in CI, where ``HDSU_REQUIRE_BROWSER=1``).
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import time
from pathlib import Path

import pytest
from server_helpers import CHROMIUM, start_server
from test_app import seed_run

from hdsu_core import jobs, liveness
from hdsu_core.engine import RunConfig
from hdsu_core.store import RunStatus, Store

SESSIONS = 10
BUDGET_S = 180  # the bound of the 10-session browse (a hang guard: it took 93 s on the 2-core machine)
# The issue keeps the load test in CI only if it stays under a minute. On the 2-core CI machine
# the 10 Chromium contexts alone (each loads and compiles Streamlit's and plotly's JavaScript)
# take 85-93 s (p50 11-13 s, p95 42-54 s): opt in with HDSU_LOAD_TEST=1. The restart test runs always.
LOAD_TEST = os.environ.get("HDSU_LOAD_TEST") == "1"
# (sidebar link, heading, the element that shows last on the page)
PAGES = [
    ("Hierarchy", "Hierarchy", '[data-testid="stPlotlyChart"]'),
    ("Runs", "Runs", '[data-testid="stDataFrame"]'),
    ("Compare", "Compare", '[data-testid="stMetric"]'),
]

if os.environ.get("HDSU_REQUIRE_BROWSER") != "1":
    pytest.importorskip("playwright", reason="playwright is not installed (pip install -r requirements.txt)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Chromium not found at {CHROMIUM}; load test skipped", allow_module_level=True)
from playwright.async_api import async_playwright  # noqa: E402


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A state directory with two finished runs and one run in progress, and a server on it."""
    home = tmp_path_factory.mktemp("load_home")
    cache = (
        Path(os.environ["HDSU_HOME"]) / "models"
        if os.environ.get("HDSU_HOME")
        else liveness.paths.PROJECT_ROOT / "var" / "models"
    )
    (home / "models").symlink_to(cache, target_is_directory=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("HDSU_HOME", str(home))
    mp.delenv("HDSU_DB", raising=False)
    store = Store()
    seed_run(store, "r-earlier-anxiety")
    seed_run(store, "r-earlier-asthma", forget=("asthma",))
    cfg = RunConfig(
        forget=["anxiety"],
        method="grad_ascent",
        settings={"max_steps": 1_000_000, "check_every": 1_000_000_000, "time_budget_s": 400},
    )
    run_id = jobs.launch(cfg, store=store, author="load-test")
    server = start_server(home)
    state = {"home": home, "store": store, "run_id": run_id, "server": server}
    try:
        deadline = time.time() + 180
        while store.get_run(run_id)["status"] != RunStatus.RUNNING:
            assert time.time() < deadline, jobs.log_tail(run_id)
            time.sleep(0.5)
        yield state
    finally:
        state["server"].stop()
        run = store.get_run(run_id)
        if liveness.pid_alive(run.get("pid")):
            os.kill(int(run["pid"]), 9)
        mp.undo()


async def _settled(page, selector: str) -> None:
    await page.locator(selector).first.wait_for(state="visible", timeout=60_000)
    try:
        await page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=30_000)
    except Exception:  # noqa: BLE001 - the Runs page's live fragment may keep it busy
        pass


async def _session(browser, url: str, timings: list, problems: list, n: int) -> None:
    ctx = await browser.new_context(viewport={"width": 1280, "height": 850})
    page = await ctx.new_page()
    page.on("pageerror", lambda e: problems.append(f"session {n}: page error {e}"))
    page.on("response", lambda r: r.status >= 500 and problems.append(f"session {n}: HTTP {r.status} {r.url}"))
    t = time.perf_counter()
    await page.goto(url)
    await _settled(page, '[data-testid="stSidebarNav"]')
    timings.append(("Overview", time.perf_counter() - t))
    for link, heading, last in PAGES:
        t = time.perf_counter()
        await page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=link, exact=True).click()
        await page.get_by_role("heading", name=heading).first.wait_for(timeout=60_000)
        await _settled(page, last)
        timings.append((link, time.perf_counter() - t))
        exceptions = page.locator('[data-testid="stException"]')
        if await exceptions.count():
            problems.append(f"session {n}: {link} shows an exception: {await exceptions.first.inner_text()}")
    await ctx.close()


async def _browse(url: str) -> tuple[list, list]:
    timings: list = []
    problems: list = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            await asyncio.wait_for(
                asyncio.gather(*(_session(browser, url, timings, problems, n) for n in range(SESSIONS))), BUDGET_S
            )
        except TimeoutError:
            problems.append(f"not done in {BUDGET_S} s; pages shown by then: {[(n, round(s, 1)) for n, s in timings]}")
        finally:
            await browser.close()
    return timings, problems


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1] if len(values) > 1 else values[0]


@pytest.mark.skipif(
    not LOAD_TEST, reason="10 browser sessions take over a minute on 2 cores (93 s measured); HDSU_LOAD_TEST=1 runs it"
)
def test_ten_sessions_browse_while_a_run_is_in_progress(live):
    store, run_id = live["store"], live["run_id"]
    progress_before = store.get_run(run_id)["heartbeat_at"]
    t0 = time.time()
    timings, problems = asyncio.run(_browse(live["server"].url))
    took = time.time() - t0
    assert not problems, problems
    assert len(timings) == SESSIONS * (1 + len(PAGES))
    seconds = [s for _, s in timings]
    p50, p95 = _quantile(seconds, 0.50), _quantile(seconds, 0.95)
    per_page = {
        name: round(statistics.median([s for n, s in timings if n == name]), 2)
        for name, _ in [("Overview", 0), *[(p[0], 0) for p in PAGES]]
    }
    print(
        f"\n{SESSIONS} sessions x {1 + len(PAGES)} pages in {took:.1f} s while run {run_id} worked: "
        f"page response p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(seconds):.2f} s; median per page {per_page}"
    )
    run = store.get_run(run_id)
    assert run["status"] == RunStatus.RUNNING and run["heartbeat_at"] > progress_before  # the run went on meanwhile
    log = live["server"].log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert took < BUDGET_S


def test_an_app_restart_mid_run_reattaches_to_the_worker(live):
    store, run_id = live["store"], live["run_id"]
    live["server"].stop(sig=9)  # the app dies; the worker runs in its own session and goes on
    r = store.get_run(run_id)
    assert liveness.pid_alive(int(r["pid"])), (r["status"], r["error"], r["message"], jobs.log_tail(run_id))
    live["server"] = start_server(live["home"], log_name="streamlit-restarted.log")

    async def follow() -> list[str]:
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
            page = await (await browser.new_context()).new_page()
            await page.goto(f"{live['server'].url}/runs")
            card = page.get_by_text(run_id).first
            await card.wait_for(timeout=60_000)
            bar = page.locator('[data-testid="stProgress"]').first
            seen = [await bar.inner_text()]
            for _ in range(20):  # the live fragment redraws the progress line every 2 s
                await page.wait_for_timeout(1500)
                seen.append(await bar.inner_text())
                if len(set(seen)) > 1:
                    break
            await page.get_by_role("button", name=re.compile("Cancel")).first.click()
            # .first: while the live fragment redraws, the old and the new caption can both be on the page.
            await page.get_by_text("No active runs.").first.wait_for(timeout=60_000)
            await browser.close()
            return seen

    seen = asyncio.run(follow())
    assert len(set(seen)) > 1, seen  # the progress line moved on the restarted app (elapsed time, step)
    run = store.get_run(run_id)
    assert run["status"] == RunStatus.CANCELLED and run["message"] == "cancelled by user", run
    events = store.audit_events(run_id)
    assert {"launch_run", "cancel_run", "run_cancelled"} <= set(events["action"])
