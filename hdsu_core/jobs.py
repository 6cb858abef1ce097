"""Runs as separate worker processes: launch, progress, cancel, and recovery from killed workers.

The app never runs an unlearning job in its own process. ``launch`` writes a queued run row and
starts ``python -m hdsu_core worker RUN_ID --db PATH`` in a new process session, so the job keeps
going through a browser refresh or an app restart. The worker reports progress into DuckDB (through
store.py's locked short-lived connections). Cancel is a flag file the worker polls between steps,
plus SIGTERM as a fallback. ``reap`` marks runs whose process is gone (no heartbeat, see
liveness.py) as failed with the reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from hdsu_core import distributed, paths
from hdsu_core.compute import ModelError
from hdsu_core.datasets import DatasetError
from hdsu_core.engine import RunConfig
from hdsu_core.lifecycle import create_run, execute_run
from hdsu_core.liveness import log_path, pid_alive, this_host
from hdsu_core.liveness import reap as reap_runs
from hdsu_core.methods.base import Cancelled
from hdsu_core.progress import ProgressFn, no_progress, stderr_progress
from hdsu_core.ranks import launch_ranks, rank_main
from hdsu_core.security.roles import require
from hdsu_core.store import ACTIVE_STATUSES, RunStatus, Store

# Scheduling priority of a worker (nice): under the app's server, so the pages answer while a run
# computes; on an idle machine the worker still gets every free core.
WORKER_NICE = 10


def cancel_flag(run_id: str) -> Path:
    return paths.jobs_dir() / f"{run_id}.cancel"


def launch(cfg: RunConfig, *, store, author: str, run_id: str | None = None) -> str:
    """Create the run row and start a detached worker process. Returns the run id."""
    if not cfg.forget:
        raise ValueError("empty selection: pick at least one concept to forget")
    try:  # refuses a GPU that is not there, a broken model or bad data now, not in the worker later
        run_id = create_run(store, cfg, author=author, run_id=run_id)
    except (ModelError, DatasetError) as e:
        raise ValueError(str(e)) from None
    env = dict(os.environ)
    env["PYTHONPATH"] = str(paths.PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    try:
        with open(log_path(run_id), "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hdsu_core", "worker", run_id, "--db", str(store.path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(paths.PROJECT_ROOT),
                env=env,
                start_new_session=True,
            )
    except OSError as e:  # no log (a full or read-only disk), no process: the run fails now, not in 30 s
        reason = f"the worker could not be started: {e}"
        store.fail_if_active(run_id, reason, actor="system", details={"reason": reason})
        raise ValueError(reason) from None
    try:  # below the app: pages stay responsive while a run computes (set before torch starts its threads)
        os.setpriority(os.PRIO_PROCESS, proc.pid, WORKER_NICE)
    except OSError:
        pass
    store.beat(run_id, executor="worker", pid=proc.pid, host=this_host(), stamp=False)
    return run_id


def cancel(run_id: str, *, store, actor: str) -> str:
    """Ask a run to stop. Returns the resulting status."""
    run = store.get_run(run_id)
    if run is None:
        raise ValueError(f"unknown run {run_id!r}")
    require(store, actor, "cancel", owner=run.get("author"))
    if run["status"] not in ACTIVE_STATUSES:
        return run["status"]
    cancel_flag(run_id).touch()
    store.log_event(actor, "cancel_run", run_id, {})
    if not pid_alive(run.get("pid")):
        store.set_status(run_id, RunStatus.CANCELLED, message="cancelled before the worker started")
        return RunStatus.CANCELLED
    if run["status"] == RunStatus.RUNNING:
        # The worker turns SIGTERM into a cancel between steps. A queued worker is still starting
        # up (its handler may not be installed yet): it sees the flag file before doing any work.
        try:
            os.kill(int(run["pid"]), signal.SIGTERM)
        except OSError:
            pass
    return "cancelling"


def reap(store, stale_s: float | None = None) -> list[str]:
    """Mark active runs whose process is gone (no heartbeat for ``stale_s`` seconds, default 30,
    or a dead pid on this host) as failed, with the reason. Returns the run ids changed (see
    liveness.reap)."""
    return [r["run_id"] for r in reap_runs(store, stale_s=stale_s)]


def log_tail(run_id: str, lines: int = 40) -> str:
    p = log_path(run_id)
    if not p.exists():
        return ""
    with open(p, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 64_000))
        text = f.read().decode("utf-8", "replace")
    # tqdm/progress bars use \r; keep the last state of each line
    out = [ln.split("\r")[-1] for ln in text.splitlines()]
    return "\n".join(out[-lines:])


def worker_main(run_id: str, db: str | None) -> int:
    """Body of ``python -m hdsu_core worker``: run the job and record its outcome."""
    store = Store(db)
    run = store.get_run(run_id)
    if run is None:
        print(f"error: unknown run {run_id}", file=sys.stderr)
        return 1
    if run["status"] not in ACTIVE_STATUSES:
        print(f"run {run_id} is {run['status']}; nothing to do", file=sys.stderr)
        return 0
    processes = int(run["config"].get("processes") or 1)
    if processes > 1 and not distributed.launched():  # this process launches the ranks and waits
        try:
            return 0 if launch_ranks(store, run_id, processes, cancel_flag(run_id)) == 0 else 1
        finally:
            cancel_flag(run_id).unlink(missing_ok=True)
    should_cancel = _cancel_requests(run_id)
    if distributed.env_rank() == 0:  # the process that executes the lifecycle (the only one without torchrun)
        store.update_run(run_id, pid=os.getpid())
    progress = _recorded_progress(store, run_id) if distributed.env_rank() == 0 else no_progress
    try:
        if distributed.launched():
            rank_main(store, run_id, should_cancel, progress)
        else:
            execute_run(store, run_id, progress=progress, should_cancel=should_cancel, executor="worker")
        return 0
    except Cancelled:
        return 0
    except Exception:  # noqa: BLE001 - execute_run recorded it; the traceback goes to the run's log
        traceback.print_exc()
        return 1
    finally:
        if not distributed.launched():  # the launcher (or the one process) removes the flag
            cancel_flag(run_id).unlink(missing_ok=True)


def _cancel_requests(run_id: str) -> Callable[[], bool]:
    """Install the SIGTERM handler; returns ``should_cancel``: true after SIGTERM or once the
    run's cancel flag file exists."""
    signalled = {"flag": False}

    def on_term(signum, frame):
        signalled["flag"] = True

    signal.signal(signal.SIGTERM, on_term)

    def should_cancel() -> bool:
        return signalled["flag"] or cancel_flag(run_id).exists()

    return should_cancel


def _recorded_progress(store, run_id: str) -> ProgressFn:
    """Progress lines into the run's log, and into the store at most once a second (always on a
    change of phase): the Runs page reads it from there."""
    last = {"t": 0.0, "phase": None}

    def progress(phase: str, frac: float, msg: str) -> None:
        stderr_progress(phase, frac, msg)
        now = time.time()
        if phase != last["phase"] or now - last["t"] > 1.0:
            last.update(t=now, phase=phase)
            store.add_progress(run_id, phase, frac, msg)

    return progress
