"""The life of a run row: created queued, then running, then done, cancelled or failed.

Every way of running (CLI ``run`` and ``demo``, the worker process behind the app, the benchmark)
goes through these two functions, so a run's rows and audit events read the same whoever started
it. The engine only computes and writes results under an existing row.

Audit events: ``launch_run`` (by the author) when the row is created; then one of ``run_done``
(by the author), ``run_cancelled`` or ``run_failed`` (by the executor: the process that ran it;
``system`` when ``liveness.reap`` finds that process gone). While it executes, a run beats
(``liveness.Heartbeat``); a Ctrl-C or SIGTERM inside ``interrupts.interrupts`` marks it cancelled.
"""

from __future__ import annotations

from typing import Callable

from hdsu_core.compute import resolve_compute
from hdsu_core.engine import RunConfig, never_cancelled, new_run_id, preflight, run_unlearning
from hdsu_core.interrupts import Interrupted
from hdsu_core.liveness import Heartbeat
from hdsu_core.methods.base import Cancelled
from hdsu_core.progress import ProgressFn, no_progress
from hdsu_core.security.roles import require
from hdsu_core.store import RunStatus


def create_run(store, cfg: RunConfig, *, author: str, run_id: str | None = None) -> str:
    """Check that the run can start, then write its row (queued) and the ``launch_run`` event.

    An author whose role may not launch (``PermissionDenied``) and everything that can be
    checked without the model's weights raise here, before any row exists (``engine.preflight``):
    an unknown method or setting, a setting out of its range, a
    device that is not there, a missing or broken model file, a dataset that cannot be loaded, a
    selection with nothing to forget, nothing left to retain or too little to measure
    (``ValueError``, ``DatasetError``, ``HierarchyError``; a missing GPU ``compute.ModelError``)."""
    require(store, author, "launch")
    preflight(cfg, store)
    resolve_compute(cfg.device, cfg.dtype)
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
    return run_id


def execute_run(
    store,
    run_id: str,
    *,
    progress: ProgressFn = no_progress,
    should_cancel: Callable[[], bool] = never_cancelled,
    executor: str,
) -> dict:
    """Run the configuration stored in the row ``run_id`` and record how it ended.

    Marks the row running, then done (message ``forget A->B``) and returns the engine's result;
    on ``Cancelled`` marks it cancelled, on any other exception failed with the reason; either way
    the exception is raised again, after its status and audit event are written, for the caller
    to report. ``executor`` names the process running it in the audit trail ("worker", "cli", ...).
    """
    run = store.get_run(run_id)
    if run is None:
        raise ValueError(f"unknown run {run_id!r}")
    with Heartbeat(store, run_id, executor):  # the run's sign of life while it executes (liveness.py)
        store.set_status(run_id, RunStatus.RUNNING, message="started")
        try:
            cfg = RunConfig.from_dict(run["config"])
            if should_cancel():
                raise Cancelled()
            result = run_unlearning(cfg, store=store, run_id=run_id, progress=progress, should_cancel=should_cancel)
            outcome = f"forget {result['forget_acc_before']:.2f}->{result['forget_acc_after']:.2f}"
            store.set_status(run_id, RunStatus.DONE, message=outcome)
            store.log_event(run.get("author") or executor, "run_done", run_id, {"seconds": round(result["seconds"], 1)})
            return result
        except Cancelled:
            store.set_status(run_id, RunStatus.CANCELLED, message="cancelled by user")
            store.log_event(executor, "run_cancelled", run_id, {})
            raise
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM of a foreground run (liveness.interrupts)
            why = f"interrupted by {e.signame}" if isinstance(e, Interrupted) else "interrupted"
            store.set_status(run_id, RunStatus.CANCELLED, message=why)
            store.log_event(executor, "run_cancelled", run_id, {"reason": why})
            raise
        except Exception as e:  # every failure is recorded with its reason
            reason = failure_reason(e)
            store.set_status(run_id, RunStatus.FAILED, error=reason)
            store.log_event(executor, "run_failed", run_id, {"reason": reason})
            raise


def failure_reason(e: BaseException) -> str:
    """One line for the run row and the audit trail: the exception's class and first line."""
    return f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
