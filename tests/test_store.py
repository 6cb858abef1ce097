"""Tests for hdsu_core.store: schema, round trips, and real multi-process concurrency."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from hdsu_core import store as store_mod
from hdsu_core.store import Store, StoreError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "hdsu.duckdb"


@pytest.fixture()
def st(db: Path) -> Store:
    return Store(db)


def _run(st: Store, run_id: str = "r1", **kw) -> None:
    args = dict(
        author="alice",
        method="grad_ascent",
        model="demo-tiny",
        dataset="demo",
        forget_concepts=["cardiology", "surgery"],
        config={"lr": 1e-5, "steps": 3},
        config_hash="c0ffee",
        model_hash="m0",
        hierarchy_version=None,
    )
    args.update(kw)
    st.create_run(run_id, **args)


def _spawn(code: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=str(ROOT),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- schema ----------------------------------------------------------------------------------


LATEST = max(v for v, _ in store_mod.MIGRATIONS)


def test_migrations_create_the_latest_version_and_reopen_is_idempotent(db: Path):
    st = Store(db)
    assert st.schema_version() == LATEST
    tables = set(st.table_names())
    assert {
        "schema_version",
        "hierarchy_versions",
        "runs",
        "run_progress",
        "probe_results",
        "metrics",
        "generations",
        "audit_events",
        "bench_results",
        "run_models",
        "users",
    } <= tables
    _run(st)
    st2 = Store(db)
    assert st2.schema_version() == LATEST
    assert set(st2.table_names()) == tables
    assert st2.get_run("r1")["author"] == "alice"
    assert Path(str(db) + ".lock").parent == db.parent


def test_default_path_comes_from_paths(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("HDSU_DB", str(tmp_path / "x" / "env.duckdb"))
    st = Store()
    assert st.path == tmp_path / "x" / "env.duckdb"
    assert st.path.exists()


def test_newer_schema_version_is_refused(db: Path, monkeypatch):
    monkeypatch.setattr(store_mod, "MIGRATIONS", store_mod.MIGRATIONS + [(LATEST + 1, [])])
    assert Store(db).schema_version() == LATEST + 1  # also exercises the upgrade path
    monkeypatch.undo()
    with pytest.raises(StoreError, match=rf"schema version {LATEST + 1}.*only knows up to {LATEST}"):
        Store(db)


def test_a_version_2_database_is_upgraded_with_the_liveness_columns(db: Path, monkeypatch):
    """Migration 3 on a database made before it: the runs keep their rows and gain the columns."""
    monkeypatch.setattr(store_mod, "MIGRATIONS", [m for m in store_mod.MIGRATIONS if m[0] <= 2])
    old = Store(db)
    _run(old)
    monkeypatch.undo()
    st = Store(db)
    assert st.schema_version() == LATEST
    run = st.get_run("r1")
    assert run["author"] == "alice" and run["heartbeat_at"] is None and run["executor"] is None
    st.beat("r1", executor="cli", pid=42, host="h")
    run = st.get_run("r1")
    assert run["heartbeat_at"] is not None and (run["executor"], run["pid"], run["host"]) == ("cli", 42, "h")


def test_fail_if_active_leaves_a_finished_run_alone(st: Store):
    _run(st, "r-active")
    _run(st, "r-done")
    st.set_status("r-done", "done")
    assert st.fail_if_active("r-active", "gone", actor="system", details={"reason": "gone"})
    assert not st.fail_if_active("r-done", "gone", actor="system", details={"reason": "gone"})
    assert not st.fail_if_active("r-active", "again", actor="system", details={})
    assert st.get_run("r-active")["error"] == "gone" and st.get_run("r-done")["status"] == "done"
    assert list(st.audit_events()["action"]) == ["run_failed"]


# -- hierarchy versions ------------------------------------------------------------------------


def test_hierarchy_versions_round_trip(st: Store):
    assert st.latest_hierarchy_version() is None
    h1 = {"format": "hdsu-hierarchy/1", "name": "H", "concepts": [{"id": "a", "level": 1, "parent": None}]}
    v1 = st.save_hierarchy_version(h1, "alice", "initial")
    h2 = dict(h1, name="H2")
    v2 = st.save_hierarchy_version(h2, "bob", "rename", diff={"changed": ["name"]})
    assert (v1, v2) == (1, 2)
    latest = st.latest_hierarchy_version()
    assert latest["version_id"] == 2 and latest["hierarchy"] == h2
    assert latest["diff"] == {"changed": ["name"]} and latest["parent_version"] == 1
    assert latest["author"] == "bob" and latest["message"] == "rename"
    assert isinstance(latest["created_at"], dt.datetime)
    first = st.get_hierarchy_version(1)
    assert first["hierarchy"] == h1 and first["diff"] is None
    with pytest.raises(StoreError, match="No hierarchy version 99"):
        st.get_hierarchy_version(99)
    df = st.list_hierarchy_versions()
    assert list(df["version_id"]) == [2, 1]
    assert "hierarchy_json" not in df.columns and "hierarchy" not in df.columns


# -- runs --------------------------------------------------------------------------------------


def test_create_get_list_runs(st: Store):
    _run(st, "r1", hierarchy_version=3)
    time.sleep(0.002)
    _run(st, "r2", method="npo")
    r = st.get_run("r1")
    assert r["status"] == "queued" and r["progress"] == 0
    assert r["forget_concepts"] == ["cardiology", "surgery"]
    assert r["config"] == {"lr": 1e-5, "steps": 3}
    assert r["hierarchy_version"] == 3 and r["config_hash"] == "c0ffee"
    assert st.get_run("nope") is None
    with pytest.raises(StoreError, match="already exists"):
        _run(st, "r1")
    df = st.list_runs()
    assert list(df["run_id"]) == ["r2", "r1"]  # newest first
    assert df.iloc[1]["config"] == {"lr": 1e-5, "steps": 3}
    assert df.iloc[1]["forget_concepts"] == ["cardiology", "surgery"]
    st.set_status("r1", "running")
    assert list(st.list_runs(status="running")["run_id"]) == ["r1"]
    assert len(st.list_runs(limit=1)) == 1


def test_update_run(st: Store):
    _run(st)
    st.update_run("r1", pid=4242, summary={"acc": 0.5}, message="hi", config={"x": [1, 2]})
    r = st.get_run("r1")
    assert r["pid"] == 4242 and r["summary"] == {"acc": 0.5} and r["message"] == "hi"
    assert r["config"] == {"x": [1, 2]}
    st.update_run("r1", summary_json={"acc": 0.7}, forget_concepts=["x"], progress=1.7)
    r = st.get_run("r1")
    assert r["summary"] == {"acc": 0.7} and r["forget_concepts"] == ["x"] and r["progress"] == 1.0
    with pytest.raises(StoreError, match="unknown or read-only field 'bogus'"):
        st.update_run("r1", bogus=1)
    with pytest.raises(StoreError, match="unknown or read-only field 'run_id'"):
        st.update_run("r1", run_id="r9")
    with pytest.raises(StoreError, match="Unknown run 'nope'"):
        st.update_run("nope", message="x")
    with pytest.raises(StoreError, match="Invalid run status"):
        st.update_run("r1", status="exploded")


def test_set_status_timestamps_and_validation(st: Store):
    _run(st)
    before = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    st.set_status("r1", "running", message="go")
    r = st.get_run("r1")
    assert r["status"] == "running" and r["message"] == "go"
    assert r["started_at"] is not None and r["finished_at"] is None
    assert abs((r["started_at"] - before).total_seconds()) < 5  # stored as UTC
    started = r["started_at"]
    st.set_status("r1", "running")  # started_at is kept
    assert st.get_run("r1")["started_at"] == started
    st.set_status("r1", "failed", error="boom")
    r = st.get_run("r1")
    assert r["status"] == "failed" and r["error"] == "boom" and r["finished_at"] >= started
    for status in ("done", "cancelled"):
        st.set_status("r1", status)
        assert st.get_run("r1")["status"] == status
    with pytest.raises(StoreError, match="Invalid run status 'finished'"):
        st.set_status("r1", "finished")
    with pytest.raises(StoreError, match="Unknown run"):
        st.set_status("ghost", "running")


def test_progress(st: Store):
    _run(st)
    for i in range(5):
        st.add_progress("r1", "probe_before" if i < 3 else "unlearn", i / 4, f"step {i}")
    r = st.get_run("r1")
    assert r["phase"] == "unlearn" and r["progress"] == 1.0 and r["message"] == "step 4"
    log = st.progress_log("r1")
    assert list(log["message"]) == [f"step {i}" for i in range(5)]  # oldest first
    assert list(st.progress_log("r1", limit=2)["message"]) == ["step 3", "step 4"]
    with pytest.raises(StoreError, match="Unknown run"):
        st.add_progress("ghost", "x", 0.1)
    assert st.progress_log("ghost").empty


# -- results -----------------------------------------------------------------------------------


def _probe_rows(n: int, split: str = "forget", offset: int = 0) -> list[dict]:
    return [
        dict(
            item_id=f"q{i + offset:05d}",
            split=split,
            concept_id=f"c{i % 7}",
            correct=i % 3 == 0,
            pred=i % 4,
            answer=1,
            answer_logprob=-0.5 - i / n,
            loss=0.1 * (i % 5),
            mink=None if i % 11 == 0 else -2.0,
            option_logprobs=[-0.1, -2.3, -3.0, -4.5],
        )
        for i in range(n)
    ]


def test_probe_results_round_trip_and_replace(st: Store):
    _run(st)
    st.write_probe_results("r1", "before", _probe_rows(10))
    st.write_probe_results("r1", "after", _probe_rows(4, split="holdout"))
    df = st.probe_results("r1")
    assert len(df) == 14 and list(df["phase"].unique()) == ["before", "after"]
    b = st.probe_results("r1", "before")
    assert list(b.columns) == [
        "run_id",
        "phase",
        "item_id",
        "split",
        "concept_id",
        "correct",
        "pred",
        "answer",
        "answer_logprob",
        "loss",
        "mink",
        "option_logprobs",
    ]
    row = b.iloc[0]
    assert row["item_id"] == "q00000" and bool(row["correct"]) is True and row["pred"] == 0
    assert row["option_logprobs"] == [-0.1, -2.3, -3.0, -4.5] and pd.isna(row["mink"])
    assert b.iloc[1]["mink"] == -2.0
    # rewrite replaces only that phase
    st.write_probe_results("r1", "before", _probe_rows(3, split="retain", offset=100))
    b = st.probe_results("r1", "before")
    assert list(b["item_id"]) == ["q00100", "q00101", "q00102"] and set(b["split"]) == {"retain"}
    assert len(st.probe_results("r1", "after")) == 4
    st.write_probe_results("r1", "after", [])
    assert st.probe_results("r1", "after").empty
    with pytest.raises(StoreError, match="Invalid probe phase"):
        st.write_probe_results("r1", "during", _probe_rows(1))
    with pytest.raises(StoreError, match="invalid split"):
        st.write_probe_results("r1", "before", _probe_rows(1, split="train"))
    assert len(st.probe_results("r1", "before")) == 3  # failed writes changed nothing


def test_probe_results_bulk_5000_rows(st: Store):
    # One call, one transaction for all rows (speed is a benchmark matter, not asserted here).
    _run(st)
    rows = _probe_rows(5000)
    st.write_probe_results("r1", "before", rows)
    df = st.probe_results("r1", "before")
    assert len(df) == 5000 and df["item_id"].is_unique
    assert int(df["correct"].sum()) == sum(1 for i in range(5000) if i % 3 == 0)


def test_metrics_upsert(st: Store):
    _run(st)
    st.write_metrics("r1", {"forget_acc": 0.25, "retain_acc": 0.9})
    st.write_metrics("r1", {"forget_acc": 0.1, "auc": 0.55})
    assert st.metrics("r1") == {"forget_acc": 0.1, "retain_acc": 0.9, "auc": 0.55}
    assert st.metrics("other") == {}


def test_generations(st: Store):
    _run(st)
    st.write_generations("r1", "after", [{"prompt_id": "p1", "prompt": "Q?", "output": "A2"}])
    st.write_generations(
        "r1",
        "before",
        [{"prompt_id": "p1", "prompt": "Q?", "output": "A"}, {"prompt_id": "p2", "prompt": "R?", "output": "B"}],
    )
    st.write_generations("r1", "before", [{"prompt_id": "p1", "prompt": "Q?", "output": "A1"}])
    g = st.generations("r1")
    assert list(zip(g["phase"], g["prompt_id"], g["output"])) == [("before", "p1", "A1"), ("after", "p1", "A2")]


def test_audit_events(st: Store):
    st.log_event("alice", "edit_hierarchy", details={"added": ["x"]})
    st.log_event("bob", "start_run", run_id="r1", details={"n": 1})
    st.log_event("bob", "note", run_id="r1")
    ev = st.audit_events()
    assert list(ev["action"]) == ["note", "start_run", "edit_hierarchy"]  # newest first
    assert ev.iloc[1]["details"] == {"n": 1} and ev.iloc[0]["details"] == {}
    assert list(st.audit_events(run_id="r1")["actor"]) == ["bob", "bob"]
    assert len(st.audit_events(limit=1)) == 1


def test_bench(st: Store):
    st.save_bench("b1", "demo", [{"method": "ga", "metrics": {"fr": 0.8}}, {"method": "npo", "fr": 0.6, "kp": 0.9}])
    st.save_bench("b1", "medmcqa", [{"method": "ga", "fr": 0.5}])
    st.save_bench("b1", "demo", [{"method": "ga", "fr": 0.85}])  # replaces b1/demo
    df = st.bench_results("b1")
    got = {(r.dataset, r.method): r.metrics for r in df.itertuples()}
    assert got == {("demo", "ga"): {"fr": 0.85}, ("medmcqa", "ga"): {"fr": 0.5}}
    assert st.bench_results("nope").empty
    with pytest.raises(StoreError, match="no method"):
        st.save_bench("b2", "demo", [{"fr": 1}])


def test_delete_run(st: Store):
    _run(st)
    _run(st, "keep")
    st.add_progress("r1", "x", 0.5)
    st.write_probe_results("r1", "before", _probe_rows(3))
    st.write_metrics("r1", {"a": 1})
    st.write_generations("r1", "before", [{"prompt_id": "p", "prompt": "q", "output": "o"}])
    st.log_event("a", "start", run_id="r1")
    st.write_metrics("keep", {"a": 2})
    assert st.delete_run("r1") is True
    assert st.get_run("r1") is None and st.progress_log("r1").empty
    assert st.probe_results("r1").empty and st.metrics("r1") == {} and st.generations("r1").empty
    assert len(st.audit_events(run_id="r1")) == 1  # the audit trail outlives runs by default
    assert st.metrics("keep") == {"a": 2.0}
    assert st.delete_run("r1") is False
    st.delete_run("keep", keep_audit=False)
    assert st.list_runs().empty


def test_json_encoding_of_numpy_values(st: Store):
    np = pytest.importorskip("numpy")
    _run(st, config={"arr": np.arange(3), "f": np.float32(0.5), "s": {"b"}})
    assert st.get_run("r1")["config"] == {"arr": [0, 1, 2], "f": 0.5, "s": ["b"]}
    with pytest.raises(StoreError, match="JSON"):
        st.update_run("r1", summary={"x": object()})


def test_failed_transaction_rolls_back(st: Store):
    _run(st)
    with pytest.raises(RuntimeError):
        with st._session() as con:
            st._add_progress(con, "r1", "x", 0.7, "never")
            raise RuntimeError("abort")
    assert st.progress_log("r1").empty and st.get_run("r1")["progress"] == 0


# -- concurrency -------------------------------------------------------------------------------

WRITER = """
import sys
from hdsu_core.store import Store
db, run_id, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
st = Store(db)
for i in range(n):
    if i % 2 == 0:
        st.add_progress(run_id, "unlearn", i / n, f"{run_id} step {i}")
    else:
        st.log_event("worker", "tick", run_id=run_id, details={"i": i})
print("OK")
"""


def test_two_writer_processes_and_a_reader(db: Path):
    st = Store(db)
    _run(st, "wa")
    _run(st, "wb")
    n = 40  # calls per writer: 20 add_progress + 20 log_event (~35 ms each on 2 CPUs)
    procs = [_spawn(WRITER, str(db), rid, str(n)) for rid in ("wa", "wb")]
    reads = 0
    while any(p.poll() is None for p in procs):
        df = st.list_runs()
        assert set(df["run_id"]) == {"wa", "wb"}
        reads += 1
        time.sleep(0.05)
    outs = [p.communicate(timeout=30) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == "OK", err
    assert reads > 0
    for rid in ("wa", "wb"):
        log = st.progress_log(rid, limit=1000)
        assert list(log["message"]) == [f"{rid} step {i}" for i in range(0, n, 2)]
        assert len(st.audit_events(run_id=rid)) == n // 2
        assert st.get_run(rid)["message"] == f"{rid} step {n - 2}"


def test_threads_in_one_process(st: Store):
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(6):
                st.log_event(f"t{k}", "tick", details={"i": i})
        except BaseException as e:  # noqa: BLE001 - a thread collects every failure; reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(st.audit_events()) == 18


HOLDER = """
import sys, time
from hdsu_core.store import Store
st = Store(sys.argv[1])
with st._session() as con:                    # holds the file lock and the DuckDB file
    st._add_progress(con, "rk", "unlearn", 0.5, "uncommitted")
    print("LOCKED", flush=True)
    time.sleep(60)
"""


def test_killed_lock_holder_releases_lock(db: Path):
    st = Store(db)
    _run(st, "rk")
    p = _spawn(HOLDER, str(db))
    try:
        assert p.stdout.readline().strip() == "LOCKED", p.stderr.read()
        # The lock really is held: a short-timeout store cannot get in.
        t0 = time.perf_counter()
        with pytest.raises(StoreError, match="Timed out"):
            Store(db, lock_timeout=0.3).add_progress("rk", "x", 0.1)
        assert time.perf_counter() - t0 < 2
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        assert p.returncode == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
        p.communicate()
    # The OS released both the file lock and DuckDB's lock; the open transaction is gone.
    t0 = time.perf_counter()
    st2 = Store(db, lock_timeout=5)
    st2.add_progress("rk", "probe", 0.25, "after kill")
    assert time.perf_counter() - t0 < 3
    assert list(st2.progress_log("rk")["message"]) == ["after kill"]
    assert st2.get_run("rk")["progress"] == 0.25


RAW_HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])   # bypasses our file lock, like a stray DuckDB CLI
print("OPEN", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def test_duckdb_lock_conflict_is_retried(db: Path):
    st = Store(db)
    quick = Store(db, open_retries=1)
    p = _spawn(RAW_HOLDER, str(db), "0.6")
    try:
        assert p.stdout.readline().strip() == "OPEN", p.stderr.read()
        with pytest.raises(StoreError, match="held open by another program"):
            quick.log_event("a", "fails")
        t0 = time.perf_counter()
        st.log_event("a", "retried")  # backs off until the other program lets go
        assert time.perf_counter() - t0 > 0.2
        assert p.wait(timeout=10) == 0
    finally:
        if p.poll() is None:
            p.kill()
        p.communicate()
    assert list(st.audit_events()["action"]) == ["retried"]
