"""Runs as separate worker processes: launch, progress, cancel, and recovery from killed workers.

The app never runs an unlearning job in its own process. ``launch`` writes a queued run row and
starts ``python -m hdsu_core worker RUN_ID --db PATH`` in a new process session, so the job keeps
going through a browser refresh or an app restart. The worker reports progress into DuckDB (through
store.py's locked short-lived connections). Cancel is a flag file the worker polls between steps,
plus SIGTERM as a fallback. ``reap`` marks runs whose worker died as failed with the reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from hdsu_core import paths
from hdsu_core.engine import RunConfig

ACTIVE = ("queued", "running")


def log_path(run_id: str) -> Path:
    return paths.jobs_dir() / f"{run_id}.log"


def cancel_flag(run_id: str) -> Path:
    return paths.jobs_dir() / f"{run_id}.cancel"


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, PermissionError, OSError):
        return False
    try:  # a finished child the app has not waited for is a zombie: dead for our purposes
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def launch(cfg: RunConfig, *, store, author: str, run_id: str | None = None) -> str:
    """Create the run row and start a detached worker process. Returns the run id."""
    from hdsu_core.compute import ModelError, resolve_compute
    from hdsu_core.engine import new_run_id

    if not cfg.forget:
        raise ValueError("empty selection: pick at least one concept to forget")
    try:
        resolve_compute(cfg.device, cfg.dtype)  # refuse a GPU that is not there now, not in the worker later
    except ModelError as e:
        raise ValueError(str(e)) from None
    run_id = run_id or new_run_id()
    store.create_run(
        run_id,
        author=author,
        method=cfg.method,
        model=cfg.model,
        dataset=cfg.dataset,
        forget_concepts=list(cfg.forget),
        config=cfg.to_dict(),
        config_hash=cfg.hash(),
        hierarchy_version=cfg.hierarchy_version,
    )
    store.log_event(
        author,
        "launch_run",
        run_id,
        {"method": cfg.method, "forget": cfg.forget, "dataset": cfg.dataset, "model": cfg.model},
    )
    log = open(log_path(run_id), "ab")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(paths.PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hdsu_core", "worker", run_id, "--db", str(store.path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=str(paths.PROJECT_ROOT),
        env=env,
        start_new_session=True,
    )
    log.close()
    store.update_run(run_id, pid=proc.pid)
    return run_id


def cancel(run_id: str, *, store, actor: str) -> str:
    """Ask a run to stop. Returns the resulting status."""
    run = store.get_run(run_id)
    if run is None:
        raise ValueError(f"unknown run {run_id!r}")
    if run["status"] not in ACTIVE:
        return run["status"]
    cancel_flag(run_id).touch()
    store.log_event(actor, "cancel_run", run_id, {})
    if not pid_alive(run.get("pid")):
        store.set_status(run_id, "cancelled", message="cancelled before the worker started")
        return "cancelled"
    if run["status"] == "running":
        # The worker turns SIGTERM into a cancel between steps. A queued worker is still starting
        # up (its handler may not be installed yet): it sees the flag file before doing any work.
        try:
            os.kill(int(run["pid"]), signal.SIGTERM)
        except OSError:
            pass
    return "cancelling"


def reap(store, grace_s: float = 20.0) -> list[str]:
    """Mark active runs whose worker process is gone as failed. Returns the run ids changed."""
    changed = []
    runs = store.list_runs(limit=200)
    for _, r in runs.iterrows():
        if r["status"] not in ACTIVE:
            continue
        created = r.get("created_at")
        age = _age_s(created, grace_s)
        pid = None if r.get("pid") is None or r.get("pid") != r.get("pid") else int(r["pid"])
        if pid_alive(pid) or (pid is None and age < grace_s):
            continue
        if r["status"] == "queued" and age < grace_s:
            continue
        store.set_status(
            r["run_id"],
            "failed",
            error=f"worker process {pid} is no longer running (killed or crashed); see {log_path(r['run_id']).name}",
        )
        store.log_event("system", "run_failed", r["run_id"], {"reason": "worker died"})
        changed.append(r["run_id"])
    return changed


def _age_s(created, default: float) -> float:
    """Seconds since a store timestamp (naive datetimes hold UTC)."""
    from datetime import datetime, timezone

    if created is None or not hasattr(created, "timestamp"):
        return default + 1
    if getattr(created, "tzinfo", None) is None:
        created = created.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - created).total_seconds()


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
    from hdsu_core.engine import run_unlearning
    from hdsu_core.methods.base import Cancelled
    from hdsu_core.store import Store

    store = Store(db)
    run = store.get_run(run_id)
    if run is None:
        print(f"error: unknown run {run_id}", file=sys.stderr)
        return 1
    if run["status"] not in ACTIVE:
        print(f"run {run_id} is {run['status']}; nothing to do", file=sys.stderr)
        return 0
    cancelled = {"flag": False}

    def on_term(signum, frame):
        cancelled["flag"] = True

    signal.signal(signal.SIGTERM, on_term)

    def should_cancel() -> bool:
        return cancelled["flag"] or cancel_flag(run_id).exists()

    last = {"t": 0.0, "phase": None}

    def progress(phase: str, frac: float, msg: str) -> None:
        print(f"[{phase}] {frac * 100:5.1f}% {msg}", flush=True)
        now = time.time()
        # Throttle DB writes; always record phase changes.
        if phase != last["phase"] or now - last["t"] > 1.0:
            last.update(t=now, phase=phase)
            store.add_progress(run_id, phase, frac, msg)

    store.update_run(run_id, pid=os.getpid())
    store.set_status(run_id, "running", message="started")
    try:
        cfg = RunConfig.from_dict(run["config"])
        if should_cancel():
            raise Cancelled()
        result = run_unlearning(cfg, store=store, run_id=run_id, progress=progress, should_cancel=should_cancel)
        store.set_status(
            run_id, "done", message=f"forget {result['forget_acc_before']:.2f}->{result['forget_acc_after']:.2f}"
        )
        store.log_event(run.get("author") or "worker", "run_done", run_id, {"seconds": round(result["seconds"], 1)})
        return 0
    except Cancelled:
        store.set_status(run_id, "cancelled", message="cancelled by user")
        store.log_event("worker", "run_cancelled", run_id, {})
        return 0
    except Exception as e:  # noqa: BLE001 - every failure is recorded with its reason
        traceback.print_exc()
        reason = f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        store.set_status(run_id, "failed", error=reason)
        store.log_event("worker", "run_failed", run_id, {"reason": reason})
        return 1
    finally:
        try:
            cancel_flag(run_id).unlink()
        except FileNotFoundError:
            pass
