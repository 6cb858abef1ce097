"""One run lifecycle for the CLI, the worker and the benchmark: rows, statuses and audit events.

The real runs use the cached demo model (built once under var/models) with a two-step gradient
ascent, so a run is mostly its probes; the failure and cancel cases stop before any model work.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
from pathlib import Path

import pytest

from hdsu_core import datasets, jobs, paths
from hdsu_core.cli import build_parser, main
from hdsu_core.demo_model import build_demo_model
from hdsu_core.engine import DEFAULT_FORGET, RunConfig, run_unlearning
from hdsu_core.lifecycle import create_run, execute_run
from hdsu_core.methods.base import Cancelled
from hdsu_core.store import RunStatus, Store

QUICK = {"method": "grad_ascent", "settings": {"max_steps": 2}, "n_generations": 2}
QUICK_CLI = ["--method", "grad_ascent", "--set", "max_steps=2", "--forget", "anxiety"]


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "h.duckdb")


def run_worker(store: Store, run_id: str) -> int:
    """``python -m hdsu_core worker`` in this process (its SIGTERM handler is put back after)."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        return jobs.worker_main(run_id, str(store.path))
    finally:
        signal.signal(signal.SIGTERM, handler)


def actions(store: Store, run_id: str) -> list[tuple[str, str]]:
    """(actor, action) of the run's audit events, oldest first."""
    ev = store.audit_events(run_id)
    return [(a, b) for a, b in zip(ev["actor"], ev["action"])][::-1]


def cli_run(store: Store, capsys, *args: str):
    """``python -m hdsu_core run`` in this process: (exit code, captured stdout / stderr)."""
    code = main(["run", "--db", str(store.path), "--quiet", *args])
    return code, capsys.readouterr()


def only_run_id(store: Store) -> str:
    runs = store.list_runs()
    assert len(runs) == 1
    return runs["run_id"].iloc[0]


def test_cli_run_and_worker_run_share_the_lifecycle(store, capsys):
    code, out = cli_run(store, capsys, *QUICK_CLI, "--json", "--author", "alice")
    assert code == 0, out.err
    cli_result = json.loads(out.out)
    cli_id = cli_result["run_id"]
    worker_id = create_run(store, RunConfig(forget=["anxiety"], **QUICK), author="bob")
    assert store.get_run(worker_id)["status"] == RunStatus.QUEUED
    assert run_worker(store, worker_id) == 0

    rows = {rid: store.get_run(rid) for rid in (cli_id, worker_id)}
    for rid, row in rows.items():
        assert row["status"] == RunStatus.DONE and row["error"] is None
        summary = row["summary"]
        assert row["message"] == f"forget {summary['forget_acc_before']:.2f}->{summary['forget_acc_after']:.2f}"
        assert row["started_at"] is not None and row["finished_at"] is not None
        assert not store.probe_results(rid).empty
    assert rows[cli_id]["author"] == "alice" and rows[worker_id]["author"] == "bob"
    assert actions(store, cli_id) == [("alice", "launch_run"), ("alice", "run_done")]
    assert actions(store, worker_id) == [("bob", "launch_run"), ("bob", "run_done")]
    # The same configuration gives the same numbers whichever way it ran.
    summaries = [rows[rid]["summary"] for rid in (cli_id, worker_id)]
    for key in ("forget_acc_after", "retain_acc_after", "mia_auc", "changed_weights", "ppl_after"):
        assert summaries[0][key] == summaries[1][key], key
    assert not store.progress_log(worker_id).empty  # the worker records its progress for the Runs page


def test_bad_settings_and_missing_gpu_fail_before_any_row(store, capsys):
    assert cli_run(store, capsys, "--set", "step_nrom=5")[0] == 1
    assert cli_run(store, capsys, "--method", "nope")[0] == 1
    with pytest.raises(ValueError, match="step_nrom"):
        create_run(store, RunConfig(forget=["anxiety"], settings={"step_nrom": 5}), author="t")
    assert store.list_runs().empty
    assert store.audit_events().empty


def mismatched_model(tmp_path) -> Path:
    """The demo model's directory with a config.json that does not fit its weights (twice the
    hidden size): every file check before the run passes, loading the weights fails."""
    src = Path(build_demo_model().path)
    out = tmp_path / "mismatched"
    shutil.copytree(src, out)
    config = json.loads((out / "config.json").read_text())
    config["hidden_size"] *= 2
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_a_missing_model_is_refused_before_any_row(store, capsys, tmp_path):
    code, out = cli_run(store, capsys, "--model", str(tmp_path / "nope"))
    assert code == 1
    assert out.err.startswith("error: model not found") and len(out.err.strip().splitlines()) == 1
    assert store.list_runs().empty and store.audit_events().empty


def test_a_failing_cli_run_is_marked_failed_with_its_reason(store, capsys, tmp_path):
    code, out = cli_run(store, capsys, *QUICK_CLI, "--model", str(mismatched_model(tmp_path)))
    assert code == 1
    assert out.err.startswith("error: could not load model") and len(out.err.strip().splitlines()) == 1
    row = store.get_run(only_run_id(store))
    assert row["status"] == RunStatus.FAILED and row["error"].startswith("ModelError: could not load model")
    assert row["finished_at"] is not None
    ev = store.audit_events(row["run_id"])
    assert list(ev["action"])[::-1] == ["launch_run", "run_failed"]
    assert ev["details"].iloc[0] == {"reason": row["error"]}


def test_a_failing_worker_run_is_marked_failed_with_its_reason(store, tmp_path, capsys):
    data = tmp_path / "kb.jsonl"
    shutil.copy(paths.DEMO_KB, data)
    run_id = create_run(store, RunConfig(forget=["anxiety"], dataset=f"generic:{data}", **QUICK), author="bob")
    data.unlink()  # gone between the launch and the start of the worker
    assert run_worker(store, run_id) == 1
    assert "Traceback" in capsys.readouterr().err  # the worker's log keeps the traceback
    row = store.get_run(run_id)
    assert row["status"] == RunStatus.FAILED and row["error"].startswith("DatasetError: dataset file not found")
    assert actions(store, run_id) == [("bob", "launch_run"), ("worker", "run_failed")]


def test_a_cancelled_run_is_cancelled(store):
    run_id = create_run(store, RunConfig(forget=["anxiety"], **QUICK), author="bob")
    with pytest.raises(Cancelled):
        execute_run(store, run_id, should_cancel=lambda: True, executor="cli")
    row = store.get_run(run_id)
    assert row["status"] == RunStatus.CANCELLED and row["message"] == "cancelled by user"
    assert actions(store, run_id) == [("bob", "launch_run"), ("cli", "run_cancelled")]


def test_a_worker_sees_the_cancel_flag(store):
    run_id = create_run(store, RunConfig(forget=["anxiety"], **QUICK), author="bob")
    jobs.cancel_flag(run_id).touch()
    assert run_worker(store, run_id) == 0
    assert store.get_run(run_id)["status"] == RunStatus.CANCELLED
    assert not jobs.cancel_flag(run_id).exists()  # the worker removes the flag it acted on
    assert actions(store, run_id)[-1] == ("worker", "run_cancelled")


def test_run_unlearning_needs_an_existing_row(store):
    cfg = RunConfig(forget=["anxiety"], **QUICK)
    for run_id in ("r-missing", None):
        with pytest.raises(ValueError, match="no run row"):
            run_unlearning(cfg, store=store, run_id=run_id)
    assert store.list_runs().empty


def test_dataset_kinds_are_one_list():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    data = next(a for a in sub.choices["data"]._actions if isinstance(a, argparse._SubParsersAction))
    kind = next(a for a in data.choices["load"]._actions if a.dest == "kind")
    assert tuple(kind.choices) == datasets.KINDS
    assert set(DEFAULT_FORGET) == set(datasets.KINDS)  # every kind has a default selection
    assert datasets.dataset_kind("demo") == "demo"
    assert datasets.dataset_kind("mhqa_b:/data/x.csv") == "mhqa_b"
