"""A run over several processes: the worker launches ``torchrun`` (``torch.distributed.run``,
part of torch itself) with one process per GPU, or the number asked for on a CPU; each process
runs ``python -m hdsu_core worker RUN_ID`` as a rank (distributed.py: the same seeded code on
every rank, the batches split by rows, sums all-reduced). Rank 0 executes the run's lifecycle
(status, heartbeat, progress, results, receipt, delta); the others only compute. A cancel seen by
any rank (flag file, SIGTERM) stops all of them at the same step. If a process dies, torchrun
stops the others and the launcher marks the run failed with the reason."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

from hdsu_core import distributed, paths
from hdsu_core.compute import resolve_device
from hdsu_core.engine import RunConfig, run_unlearning
from hdsu_core.lifecycle import execute_run
from hdsu_core.progress import ProgressFn, no_progress


def torchrun_command(run_id: str, db: str, processes: int) -> list[str]:
    """``torchrun --standalone`` (a free local port, one node) running the worker as a module."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "hdsu_core",
        "worker",
        run_id,
        "--db",
        db,
    ]


def launch_ranks(store, run_id: str, processes: int, cancel_flag: Path) -> int:
    """Run ``run_id`` over ``processes`` processes and wait for them (this process is the
    launcher: the worker started by ``jobs.launch``, or the CLI's ``run --processes N``). Its
    SIGTERM / Ctrl-C becomes the run's cancel flag. Returns torchrun's exit status; a non-zero
    one marks a run that is still active failed (a rank that died leaves no status behind)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(paths.PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    # The cores are shared among the ranks (torchrun's own default is one thread each).
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    proc = subprocess.Popen(torchrun_command(run_id, str(store.path), processes), cwd=str(paths.PROJECT_ROOT), env=env)

    def on_term(signum, frame):
        cancel_flag.touch()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        while True:
            try:
                rc = proc.wait()
                break
            except KeyboardInterrupt:  # Ctrl-C of a CLI run: the ranks stop at their next step
                cancel_flag.touch()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if rc != 0:
        reason = f"a process of the {processes}-process run failed (torchrun exit status {rc}); see the run's log"
        store.fail_if_active(run_id, reason, actor="system", details={"reason": reason})
    return rc


def rank_main(store, run_id: str, should_cancel: Callable[[], bool], progress: ProgressFn = no_progress) -> None:
    """One rank of the run (in a process torchrun started): rank 0 through the lifecycle, the
    others through the engine alone, without writing. Raises what the run raised."""
    run = store.get_run(run_id)
    cfg = RunConfig.from_dict(run["config"])
    distributed.init(resolve_device(cfg.device))

    def cancel() -> bool:  # collective: every rank calls it at the same points of the same code
        return distributed.any_rank(should_cancel())

    try:
        if distributed.is_main():
            execute_run(store, run_id, progress=progress, should_cancel=cancel, executor="worker")
        else:
            # execute_run asks once before the run starts: the others take part in that check too.
            if cancel():
                return
            run_unlearning(cfg, store=store, run_id=run_id, should_cancel=cancel)
    finally:
        distributed.close()
