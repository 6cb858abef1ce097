"""Benchmarks launched from the app, as worker jobs like runs.

A bench is many runs (every method, per dataset and seed) plus retrain references, so it has no
run row of its own: ``launch`` writes the job's state to ``var/jobs/bench-ID.json`` and starts
``python -m hdsu_core.bench_jobs bench-ID`` in a new process session (the job keeps going through
a browser refresh or an app restart). The worker runs :func:`hdsu_core.bench.run_bench` per seed:
each method's run gets its usual run row (the launching user as author, the worker's pid) and the results land in
``bench_results``; the worker rewrites the state file with its progress at most once a second.
Cancel is a flag file plus SIGTERM, as for runs; :func:`list_jobs` marks a job whose worker died as
failed. Only the worker writes the state file once it runs (the app writes it before the start and
after the worker is gone), so the file needs no lock.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from hdsu_core import paths
from hdsu_core.bench import method_settings, run_bench
from hdsu_core.compute import ModelError, resolve_compute
from hdsu_core.engine import RunConfig, check_run_options
from hdsu_core.jobs import pid_alive
from hdsu_core.lifecycle import failure_reason
from hdsu_core.methods import available
from hdsu_core.methods.base import Cancelled
from hdsu_core.progress import stderr_progress
from hdsu_core.security.roles import require
from hdsu_core.store import Store

PREFIX = "bench-"
ACTIVE = ("queued", "running")
START_GRACE_S = 60.0  # a queued job without a worker pid after this long never started
WRITE_INTERVAL_S = 1.0


def state_path(job_id: str) -> Path:
    return paths.jobs_dir() / f"{job_id}.json"


def log_path(job_id: str) -> Path:
    return paths.jobs_dir() / f"{job_id}.log"


def cancel_flag(job_id: str) -> Path:
    return paths.jobs_dir() / f"{job_id}.cancel"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_job(job_id: str) -> dict | None:
    try:
        return json.loads(state_path(job_id).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _update(job_id: str, **fields: Any) -> dict:
    job = read_job(job_id) or {"job_id": job_id}
    job.update(fields)
    paths.atomic_write_text(state_path(job_id), json.dumps(job, indent=1, default=str))
    return job


def bench_config(
    datasets: Sequence[str],
    methods: Sequence[str],
    *,
    forget: Sequence[str] = (),
    seeds: Sequence[int] = (0,),
    retrain: bool = True,
    limit: int | None = None,
    settings: dict | None = None,
    device: str = "auto",
    dtype: str = "float32",
    model: str = "demo",
    lora_r: int | None = None,
) -> dict:
    """A checked bench configuration: what ``bench`` on the command line refuses (no dataset, an
    unknown method, a setting no method has, a device that is not there, a bad LoRA rank) raises
    ``ValueError`` here, before any job exists. ``forget`` empty: each dataset's default selection;
    ``lora_r``: every method unlearns through rank-``lora_r`` LoRA adapters (``bench --lora``)."""
    if not datasets:
        raise ValueError("pick at least one dataset")
    if not methods:
        raise ValueError("pick at least one method")
    bad = [m for m in methods if m not in available()]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; available: {', '.join(available())}")
    if not seeds:
        raise ValueError("give at least one seed")
    method_settings(list(methods), dict(settings or {}))
    try:
        resolve_compute(device, dtype)
    except ModelError as e:
        raise ValueError(str(e)) from None
    if lora_r is not None:
        check_run_options(RunConfig(forget=[], unlearn_lora_r=lora_r))
    return {
        "datasets": list(datasets),
        "methods": list(methods),
        "forget": list(forget),
        "seeds": [int(s) for s in seeds],
        "retrain": bool(retrain),
        "limit": int(limit) if limit else None,
        "settings": dict(settings or {}),
        "device": device,
        "dtype": dtype,
        "model": model,
        "lora_r": lora_r,
    }


def units(config: dict) -> int:
    """Steps of a bench for its progress: per seed and dataset, the retrain reference and each method."""
    return len(config["seeds"]) * len(config["datasets"]) * (len(config["methods"]) + int(config["retrain"]))


def launch(config: dict, *, store: Store, author: str) -> str:
    """Write the queued job and start its worker process. Returns the job id. The author's role
    must allow launching runs (``PermissionDenied``; its runs are created as the author)."""
    require(store, author, "launch")
    job_id = PREFIX + time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    _update(
        job_id,
        status="queued",
        author=author,
        created_at=_now(),
        db=str(store.path),
        config=config,
        units=units(config),
        progress=0.0,
        phase="queued",
        message="",
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = str(paths.PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    with open(log_path(job_id), "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "hdsu_core.bench_jobs", job_id],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(paths.PROJECT_ROOT),
            env=env,
            start_new_session=True,
        )
    store.log_event(author, "launch_bench", None, {"job": job_id, **config})
    return job_id


def _age_s(job: dict) -> float:
    try:
        return (datetime.now(timezone.utc) - datetime.fromisoformat(job["created_at"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return START_GRACE_S + 1


def list_jobs(limit: int = 20) -> list[dict]:
    """The latest bench jobs, newest first; an active job whose worker is gone is marked failed."""
    jobs = []
    for p in sorted(paths.jobs_dir().glob(f"{PREFIX}*.json"), reverse=True)[:limit]:
        job = read_job(p.stem)
        if job is None:
            continue
        if job.get("status") in ACTIVE and not pid_alive(job.get("pid")):
            if job.get("pid") or _age_s(job) > START_GRACE_S:
                job = _update(
                    p.stem,
                    status="failed",
                    finished_at=_now(),
                    error=f"worker process {job.get('pid')} is no longer running; see {log_path(p.stem).name}",
                )
        jobs.append(job)
    return jobs


def cancel(job_id: str, *, store: Store, actor: str) -> str:
    """Ask a bench job to stop (at its next progress report). Returns its status or "cancelling"."""
    job = read_job(job_id)
    if job is None:
        raise ValueError(f"unknown bench job {job_id!r}")
    require(store, actor, "cancel", owner=job.get("author"))
    if job.get("status") not in ACTIVE:
        return str(job.get("status"))
    cancel_flag(job_id).touch()
    store.log_event(actor, "cancel_bench", None, {"job": job_id})
    if pid_alive(job.get("pid")):
        try:
            os.kill(int(job["pid"]), signal.SIGTERM)
        except OSError:
            pass
    return "cancelling"


def log_tail(job_id: str, lines: int = 12) -> str:
    try:
        text = log_path(job_id).read_bytes()[-32_000:].decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(ln.split("\r")[-1] for ln in text.splitlines()[-lines:])


class BenchProgress:
    """The bench's overall progress from run_bench's reports: each ``bench`` phase report starts
    the next unit (a retrain reference or a method run), the phases inside a unit move within it.
    Raises ``Cancelled`` once ``should_cancel()`` is true, so a cancel takes effect at the next
    report wherever the bench is (runs record it as cancelled, a retrain build just stops)."""

    def __init__(self, total: int, write: Callable[[dict], Any], should_cancel: Callable[[], bool]):
        self.total = max(1, total)
        self.write = write
        self.should_cancel = should_cancel
        self.unit = -1
        self.current = ""
        self.done = 0.0
        self.last_write = 0.0

    def __call__(self, phase: str, frac: float, msg: str) -> None:
        if self.should_cancel():
            raise Cancelled()
        stderr_progress(phase, frac, msg)
        if phase == "bench":
            self.unit += 1
            self.current = msg
            frac = 0.0
        within = min(max(frac, 0.0), 0.99)
        self.done = max(self.done, (max(self.unit, 0) + within) / self.total)
        now = time.time()
        if phase == "bench" or now - self.last_write > WRITE_INTERVAL_S:
            self.last_write = now
            self.write(
                {
                    "progress": round(self.done, 4),
                    "phase": phase,
                    "unit": max(self.unit, 0) + 1,
                    "message": self.current if phase == "bench" else f"{self.current} · {phase}: {msg}",
                }
            )


def _cancel_requests(job_id: str) -> Callable[[], bool]:
    """Install the SIGTERM handler; ``should_cancel`` is true after SIGTERM or once the flag exists."""
    signalled = {"flag": False}

    def on_term(signum, frame):
        signalled["flag"] = True

    signal.signal(signal.SIGTERM, on_term)
    return lambda: signalled["flag"] or cancel_flag(job_id).exists()


def worker_main(job_id: str) -> int:
    """Body of ``python -m hdsu_core.bench_jobs JOB_ID``: run the bench, record how it ended."""
    job = read_job(job_id)
    if job is None:
        print(f"error: unknown bench job {job_id}", file=sys.stderr)
        return 1
    if job.get("status") not in ACTIVE:
        print(f"bench job {job_id} is {job.get('status')}; nothing to do", file=sys.stderr)
        return 0
    should_cancel = _cancel_requests(job_id)
    _update(job_id, status="running", pid=os.getpid(), started_at=_now(), phase="starting")
    cfg, store = job["config"], Store(job["db"])
    progress = BenchProgress(units(cfg), lambda fields: _update(job_id, **fields), should_cancel)
    rows: list[dict] = []
    try:
        for seed in cfg["seeds"]:
            rows += run_bench(
                cfg["datasets"],
                cfg["methods"],
                forget=cfg["forget"] or None,
                seed=seed,
                store=store,
                progress=progress,
                retrain=cfg["retrain"],
                limit=cfg["limit"],
                settings=method_settings(cfg["methods"], cfg["settings"]),
                device=cfg["device"],
                dtype=cfg["dtype"],
                model=cfg["model"],
                lora_r=cfg.get("lora_r"),  # absent in jobs written before the option
                worker_pid=os.getpid(),
                author=job.get("author") or "bench",
            )
    except Cancelled:
        _update(job_id, status="cancelled", finished_at=_now(), message=f"cancelled after {len(rows)} row(s)")
        store.log_event("worker", "bench_cancelled", None, {"job": job_id})
        return 0
    except Exception as e:  # noqa: BLE001 - recorded with its reason; the traceback goes to the job's log
        traceback.print_exc()
        _update(job_id, status="failed", finished_at=_now(), error=failure_reason(e))
        store.log_event("worker", "bench_failed", None, {"job": job_id, "reason": failure_reason(e)})
        return 1
    finally:
        cancel_flag(job_id).unlink(missing_ok=True)
    _update(job_id, status="done", finished_at=_now(), progress=1.0, phase="done", message=f"{len(rows)} bench rows")
    store.log_event(job.get("author") or "worker", "bench_done", None, {"job": job_id, "rows": len(rows)})
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]) if len(sys.argv) == 2 else 2)
