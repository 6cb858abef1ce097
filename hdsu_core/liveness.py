"""Whether a run's process is still there, without relying on its pid alone.

Every executing run (worker, CLI, bench) stamps ``runs.heartbeat_at`` from a small timer thread
(:class:`Heartbeat`) every :func:`heartbeat_interval` seconds; the row also records the executor,
its pid and its host. :func:`reap` fails an active run whose heartbeat is older than
:data:`STALE_S` with the reason ("worker gone: ...", "CLI process gone: ..."), whoever started
it and wherever it ran. On the host that recorded the pid, a dead pid is noticed at once.

A timer rather than the progress callback: one long step (a probe of thousands of items, a Fisher
pass) reports no progress for minutes, but the run is alive all along. A process that is frozen
(SIGSTOP) or gone (SIGKILL, a crash, a power cut) stops beating.

Imports neither torch nor the engine: ``python -m hdsu_core runs reap`` starts in a moment.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pandas as pd

from hdsu_core import paths
from hdsu_core.store import ACTIVE_STATUSES, StoreError

HEARTBEAT_S = 5.0  # an executing run beats this often (at least every 10 s, with room for a busy disk)
STALE_S = 30.0  # a run whose last beat is older than this is failed
START_GRACE_S = 120.0  # a live worker that has not beaten yet is still starting (importing torch)
EXECUTORS = {"worker": "worker", "cli": "CLI process", "bench": "bench process"}


def _env_seconds(name: str, default: float, low: float, high: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return min(high, max(low, value)) if value == value else default


def heartbeat_interval() -> float:
    """Seconds between beats: :data:`HEARTBEAT_S`, or ``HDSU_HEARTBEAT_S`` (the fault tests use a
    short one, so that a stale run shows within seconds); never more than 10 s."""
    return _env_seconds("HDSU_HEARTBEAT_S", HEARTBEAT_S, 0.05, 10.0)


def stale_after() -> float:
    """Seconds without a beat after which a run is failed: :data:`STALE_S`, or ``HDSU_STALE_S``
    (for the fault tests; always more than two beats)."""
    return _env_seconds("HDSU_STALE_S", STALE_S, 2 * heartbeat_interval() + 0.5, 3600.0)


def this_host() -> str:
    return socket.gethostname()


def log_path(run_id: str) -> Path:
    """The log of a worker run (its stdout and stderr)."""
    return paths.jobs_dir() / f"{run_id}.log"


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, PermissionError, OSError):
        return False
    try:  # a finished child nobody has waited for is a zombie: dead for our purposes
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class Heartbeat:
    """``with Heartbeat(store, run_id, "cli"):`` records who executes the run (executor, pid, host),
    beats once, then beats from a daemon thread until the block ends."""

    def __init__(self, store, run_id: str, executor: str, interval: float | None = None):
        self.store, self.run_id, self.executor = store, run_id, executor
        self.interval = heartbeat_interval() if interval is None else interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self.store.beat(self.run_id, executor=self.executor, pid=os.getpid(), host=this_host())
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.store.beat(self.run_id)
            except StoreError:  # a busy or full disk: the next beat tries again; missing 30 s is stale
                pass


def stale_reason(run: dict, *, now: dt.datetime, stale_s: float) -> str | None:
    """Why an active run's process is to be taken for gone, or None while it looks alive."""
    executor = _text(run.get("executor")) or ("worker" if _pid(run) is not None else "")
    label = EXECUTORS.get(executor, "the process that created the run")
    pid = _pid(run)
    local = _text(run.get("host")) in ("", this_host())  # a pid recorded on another host means nothing here
    alive = local and pid is not None and pid_alive(pid)
    log = f"; see {run['run_id']}.log" if executor == "worker" else ""
    beat = _timestamp(run.get("heartbeat_at"))
    if local and pid is not None and not alive:
        return f"{label} gone: process {pid} is no longer running (killed or crashed){log}"
    last = beat or _timestamp(run.get("created_at"))
    silent = (now - last).total_seconds() if last is not None else stale_s + 1
    if silent <= stale_s:
        return None
    if beat is None:
        if alive and silent < START_GRACE_S:
            return None
        return f"{label} gone: never started ({silent:.0f} s without a heartbeat since it was queued){log}"
    return (
        f"{label} gone: no heartbeat for {silent:.0f} s (killed, crashed or frozen; the limit is {stale_s:.0f} s){log}"
    )


def reap(store, *, stale_s: float | None = None) -> list[dict[str, Any]]:
    """Fail every active run whose process is gone (:func:`stale_reason`; ``stale_s`` defaults to
    :func:`stale_after`), each with its reason and a ``run_failed`` event by ``system``. Returns
    ``[{"run_id", "reason"}]`` of those changed."""
    stale_s = stale_after() if stale_s is None else stale_s
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    changed = []
    for status in ACTIVE_STATUSES:
        for _, row in store.list_runs(limit=1000, status=status).iterrows():
            run = row.to_dict()
            reason = stale_reason(run, now=now, stale_s=stale_s)
            if reason and store.fail_if_active(run["run_id"], reason, actor="system", details={"reason": reason}):
                changed.append({"run_id": run["run_id"], "reason": reason})
    return changed


def _pid(run: dict) -> int | None:
    v = run.get("pid")
    return None if v is None or pd.isna(v) else int(v)  # None, NaN or pd.NA: no pid recorded


def _text(v) -> str:
    return "" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)


def _timestamp(v) -> dt.datetime | None:
    """A store timestamp (naive UTC) as a datetime; None for NULL / NaT."""
    if v is None or pd.isna(v):
        return None
    return pd.Timestamp(v).to_pydatetime().replace(tzinfo=None)
