"""liveness.py on its own: the heartbeat thread, and which active runs ``reap`` takes for gone.

The rows are real rows in a real store; the only thing made up is time: a run's last beat is
set in the past by beating it, then asking ``stale_reason`` about a later ``now``.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time

import pytest

from hdsu_core import liveness
from hdsu_core.store import RunStatus, Store


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "h.duckdb")


def new_run(store: Store, run_id: str, status: str = RunStatus.RUNNING) -> None:
    store.create_run(run_id, author="t", method="hdsu", model="demo", dataset="demo", forget_concepts=["a"], config={})
    if status != RunStatus.QUEUED:
        store.set_status(run_id, status)


def later(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(seconds=seconds)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_production_heartbeat_is_every_5_s_and_a_run_is_stale_after_30_s(monkeypatch):
    monkeypatch.delenv("HDSU_HEARTBEAT_S", raising=False)
    monkeypatch.delenv("HDSU_STALE_S", raising=False)
    assert liveness.heartbeat_interval() == 5.0 <= 10 and liveness.stale_after() == 30.0
    monkeypatch.setenv("HDSU_HEARTBEAT_S", "60")
    assert liveness.heartbeat_interval() == 10.0  # never rarer than every 10 s
    monkeypatch.setenv("HDSU_STALE_S", "0")
    assert liveness.stale_after() == 2 * 10.0 + 0.5  # never less than two beats


def test_the_heartbeat_thread_beats_while_the_block_runs_and_stops_after(store):
    new_run(store, "r1")
    with liveness.Heartbeat(store, "r1", "cli", interval=0.1):
        first = store.get_run("r1")["heartbeat_at"]
        time.sleep(0.6)
        during = store.get_run("r1")["heartbeat_at"]
    run = store.get_run("r1")
    assert during > first and (run["executor"], run["pid"], run["host"]) == ("cli", os.getpid(), liveness.this_host())
    time.sleep(0.3)
    assert store.get_run("r1")["heartbeat_at"] == run["heartbeat_at"]  # no beat after the block


def test_which_runs_are_gone(store):
    host = liveness.this_host()
    new_run(store, "beating")
    store.beat("beating", executor="cli", pid=os.getpid(), host=host)
    new_run(store, "dead-pid-here")
    store.beat("dead-pid-here", executor="worker", pid=dead_pid(), host=host)
    new_run(store, "dead-pid-elsewhere")  # a pid of another host says nothing here: only the beat counts
    store.beat("dead-pid-elsewhere", executor="cli", pid=dead_pid(), host="another-host")
    new_run(store, "never-beat", status=RunStatus.QUEUED)
    new_run(store, "starting-worker", status=RunStatus.QUEUED)  # alive, not beating yet: importing torch
    store.beat("starting-worker", executor="worker", pid=os.getpid(), host=host, stamp=False)
    runs = {r["run_id"]: r.to_dict() for _, r in store.list_runs().iterrows()}

    def reason(run_id: str, after_s: float) -> str | None:
        return liveness.stale_reason(runs[run_id], now=later(after_s), stale_s=30)

    assert reason("beating", 5) is None and reason("dead-pid-elsewhere", 5) is None
    assert reason("dead-pid-here", 0).startswith("worker gone: process ")
    assert reason("dead-pid-here", 0).endswith("is no longer running (killed or crashed); see dead-pid-here.log")
    assert reason("beating", 31).startswith("CLI process gone: no heartbeat for 3")
    assert reason("dead-pid-elsewhere", 31).startswith("CLI process gone: no heartbeat for 3")
    assert reason("never-beat", 5) is None
    assert reason("never-beat", 31).startswith("the process that created the run gone: never started")
    assert reason("starting-worker", 60) is None and reason("starting-worker", 121).startswith(
        "worker gone: never started"
    )


def test_reap_fails_the_gone_runs_once_with_their_reason_and_an_event(store):
    new_run(store, "gone")
    store.beat("gone", executor="cli", pid=dead_pid(), host=liveness.this_host())
    new_run(store, "alive")
    store.beat("alive", executor="cli", pid=os.getpid(), host=liveness.this_host())
    new_run(store, "finished", status=RunStatus.DONE)
    changed = liveness.reap(store)
    assert [r["run_id"] for r in changed] == ["gone"] and changed[0]["reason"].startswith("CLI process gone")
    assert (
        store.get_run("gone")["status"] == RunStatus.FAILED and store.get_run("gone")["error"] == changed[0]["reason"]
    )
    assert (
        store.get_run("alive")["status"] == RunStatus.RUNNING and store.get_run("finished")["status"] == RunStatus.DONE
    )
    ev = store.audit_events("gone")
    assert list(ev["action"]) == ["run_failed"] and list(ev["actor"]) == ["system"]
    assert liveness.reap(store) == []
