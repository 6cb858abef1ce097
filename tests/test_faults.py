"""Faults, each a test: runs that die are noticed, the database stays consistent, nothing is lost.

Real processes, real signals, real disks: CLI runs (``python -m hdsu_core run``) and a worker
(``jobs.launch``) are interrupted, killed or frozen mid-run; a write is killed inside its
transaction; two runs execute at once; the state directory is read-only, the disk is full (a
small tmpfs, when the tests run as root), the DuckDB file is held by another program.

The interrupted runs use grad ascent with a stop rule that never fires (``LONG``), so they are
still working when the fault hits; the heartbeat is shortened (``HDSU_HEARTBEAT_S``,
``HDSU_STALE_S``) so that a stale run shows within seconds, not the production 30 s. All
interrupted processes start together (one module fixture) to share the torch start-up time.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from filelock import FileLock, Timeout
from streamlit.testing.v1 import AppTest
from test_app import seed_run

from hdsu_core import jobs, liveness, paths
from hdsu_core.cli import main
from hdsu_core.demo_model import build_demo_model
from hdsu_core.engine import RunConfig
from hdsu_core.lifecycle import create_run, execute_run
from hdsu_core.security.roles import os_user
from hdsu_core.store import RunStatus, Store

ROOT = paths.PROJECT_ROOT
APP = str(ROOT / "app.py")
QUICK = {"method": "grad_ascent", "settings": {"max_steps": 2}, "n_generations": 2}
# Grad ascent whose stop rule never checks after step 0 (check_every 10^9): the run works until it
# is interrupted or its time budget ends (a low stop_auc is no guard: an over-forgotten item's
# loss drives the forget-vs-non-member AUC to 0, and grad ascent gets there within a minute).
LONG = ["--method", "grad_ascent", "--set", "max_steps=1000000", "--set", "check_every=1000000000"]
LONG += ["--set", "time_budget_s=300", "--forget", "anxiety", "--quiet"]
FAST_BEATS = {"HDSU_HEARTBEAT_S": "0.5", "HDSU_STALE_S": "3"}
STALE_S = 3.0


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _model_cache() -> Path:
    return Path(os.environ["HDSU_HOME"]) / "models" if os.environ.get("HDSU_HOME") else ROOT / "var" / "models"


def make_home(path: Path) -> Path:
    """A fresh HDSU_HOME whose model cache is the checkout's (the demo model is built once)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "models").symlink_to(_model_cache(), target_is_directory=True)
    return path


def env_for(home: Path, **extra: str) -> dict:
    env = dict(os.environ, HDSU_HOME=str(home), PYTHONPATH=str(ROOT), **FAST_BEATS, **extra)
    env.pop("HDSU_DB", None)
    return env


def start_cli(db: Path, home: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hdsu_core", "run", "--db", str(db), *args],
        cwd=str(ROOT),
        env=env_for(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def wait_for(what: str, check, timeout: float = 120.0, every: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def the_run(store: Store) -> dict:
    runs = store.list_runs()
    assert len(runs) == 1, runs
    return store.get_run(runs["run_id"].iloc[0])


def working(store: Store) -> dict | None:
    """The store's one run once it is running and has beaten (its process is at work)."""
    runs = store.list_runs()
    if len(runs) != 1:
        return None
    run = store.get_run(runs["run_id"].iloc[0])
    return run if run["status"] == RunStatus.RUNNING and run.get("heartbeat_at") is not None else None


def error_lines(stderr: str) -> list[str]:
    """The lines the CLI itself wrote (the venv's torch extensions add warnings of their own)."""
    return [ln for ln in stderr.splitlines() if ln.startswith("error:") or "Traceback" in ln]


def probe_rows_whole(store: Store, run_id: str) -> bool:
    """Every probe phase of the run has either no rows or one row per item of its split."""
    rows = store.probe_results(run_id)
    run = store.get_run(run_id)
    n = None if not run.get("summary") else sum(run["summary"][k] for k in ("n_forget", "n_retain", "n_holdout"))
    return all(count == 0 or count == n for count in rows.groupby("phase").size().tolist())


def actions(store: Store, run_id: str) -> list[tuple[str, str]]:
    ev = store.audit_events(run_id)
    return [(a, b) for a, b in zip(ev["actor"], ev["action"])][::-1]


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)


# ---------------------------------------------------------------------------------------------
# Interrupted, killed and frozen runs (all started at once)
# ---------------------------------------------------------------------------------------------
FAULTS = ("sigint", "sigterm", "sigkill_cli", "frozen_cli")


@pytest.fixture(scope="module")
def at_work(tmp_path_factory):
    """One long CLI run per fault and one worker run, each with its own database, all at work."""
    build_demo_model()  # cached: the processes below only load it
    home = make_home(tmp_path_factory.mktemp("faults_home"))
    mp = pytest.MonkeyPatch()
    for k, v in env_for(home).items():
        mp.setenv(k, v)
    procs = {}
    stores = {name: Store(home / f"{name}.duckdb") for name in (*FAULTS, "worker")}
    try:
        for name in FAULTS:
            procs[name] = start_cli(stores[name].path, home, *LONG)
        cfg = RunConfig(
            forget=["anxiety"],
            method="grad_ascent",
            settings={"max_steps": 1_000_000, "check_every": 1_000_000_000, "time_budget_s": 300},
        )
        worker_run = jobs.launch(cfg, store=stores["worker"], author="tester")
        t0 = time.time()
        for name, store in stores.items():
            wait_for(f"the {name} run at work", lambda s=store: working(s), timeout=240)
        print(f"\n{len(stores)} runs at work after {time.time() - t0:.1f} s")
        yield {"home": home, "procs": procs, "stores": stores, "worker_run": worker_run}
    finally:
        for p in procs.values():
            kill(p)
        for store in stores.values():
            for pid in store.list_runs()["pid"].dropna():
                if liveness.pid_alive(int(pid)):
                    os.kill(int(pid), signal.SIGKILL)
        mp.undo()


def test_a_killed_worker_is_failed_at_once_the_database_is_consistent_and_the_app_serves(at_work):
    store, run_id = at_work["stores"]["worker"], at_work["worker_run"]
    before = store.table_counts()
    pid = int(store.get_run(run_id)["pid"])
    os.kill(pid, signal.SIGKILL)
    wait_for("the worker to die", lambda: not liveness.pid_alive(pid), timeout=30)
    t_kill = time.time()
    assert jobs.reap(store) == [run_id] and time.time() - t_kill < 30
    run = store.get_run(run_id)
    assert run["status"] == RunStatus.FAILED and run["finished_at"] is not None
    assert run["error"] == f"worker gone: process {pid} is no longer running (killed or crashed); see {run_id}.log"
    after = store.table_counts()
    assert after["audit_events"] == before["audit_events"] + 1  # run_failed by system
    assert {k: v for k, v in after.items() if k != "audit_events"} == {
        k: v for k, v in before.items() if k != "audit_events"
    }
    assert after["probe_results"] == after["metrics"] == after["run_models"] == 0  # nothing half-written
    # The app keeps serving: the Runs page renders and says why the run failed.
    mp = pytest.MonkeyPatch()
    mp.setenv("HDSU_DB", str(store.path))
    try:
        at = AppTest.from_file(APP, default_timeout=90)
        at.run()
        at.switch_page("pages/runs.py").run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.selectbox(key="runs_inspect").value == run_id
        assert [e.value for e in at.error] == [f"Failure reason: {run['error']}"]
    finally:
        mp.undo()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_cli_run_that_gets_sigint_or_sigterm_marks_itself_cancelled(at_work, sig):
    name = signal.Signals(sig).name.lower()
    proc, store = at_work["procs"][name], at_work["stores"][name]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    assert error_lines(err) == [f"error: interrupted by {signal.Signals(sig).name}"]
    run = the_run(store)
    assert run["status"] == RunStatus.CANCELLED and run["message"] == f"interrupted by {signal.Signals(sig).name}"
    assert run["finished_at"] is not None and run["executor"] == "cli" and run["pid"] == proc.pid
    assert actions(store, run["run_id"]) == [
        (os_user(), "launch_run"),
        ("cli", "run_cancelled"),
    ]  # launched as the OS user
    assert probe_rows_whole(store, run["run_id"])


def test_a_killed_cli_run_is_failed_by_runs_reap(at_work):
    proc, store = at_work["procs"]["sigkill_cli"], at_work["stores"]["sigkill_cli"]
    proc.kill()
    proc.wait(timeout=30)
    t_kill = time.time()
    assert the_run(store)["status"] == RunStatus.RUNNING  # nobody marked it: the process is gone
    reaped = subprocess.run(
        [sys.executable, "-m", "hdsu_core", "runs", "reap", "--db", str(store.path)],
        cwd=str(ROOT),
        env=env_for(at_work["home"]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert reaped.returncode == 0, reaped.stderr
    run = the_run(store)
    print(f"\nkilled CLI run failed by `runs reap` {time.time() - t_kill:.1f} s after the kill")
    assert run["status"] == RunStatus.FAILED and time.time() - t_kill < 30
    assert run["error"] == f"CLI process gone: process {proc.pid} is no longer running (killed or crashed)"
    assert f"{run['run_id']}  failed: CLI process gone" in reaped.stdout
    assert actions(store, run["run_id"]) == [(os_user(), "launch_run"), ("system", "run_failed")]
    counts = store.table_counts()
    assert counts["probe_results"] == counts["metrics"] == counts["generations"] == counts["run_models"] == 0
    assert liveness.reap(store) == []  # reaping again changes nothing


def test_a_frozen_cli_run_is_failed_by_its_stale_heartbeat_although_its_pid_lives(at_work):
    """SIGSTOP: the process exists (its pid is alive) but does nothing; only the heartbeat tells."""
    proc, store = at_work["procs"]["frozen_cli"], at_work["stores"]["frozen_cli"]
    for _ in range(50):  # freeze it outside a database session (it would hold the lock for good)
        proc.send_signal(signal.SIGSTOP)
        try:
            FileLock(str(store.lock_path), timeout=0).acquire().lock.release()
            break
        except Timeout:
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.05)
    t_stop = time.time()
    try:
        assert liveness.reap(store, stale_s=STALE_S) == []  # it beat a moment ago
        reaped = wait_for("the frozen run to be reaped", lambda: liveness.reap(store, stale_s=STALE_S), timeout=60)
        assert liveness.pid_alive(proc.pid)
        waited = time.time() - t_stop
        run = the_run(store)
        assert [r["run_id"] for r in reaped] == [run["run_id"]] and run["status"] == RunStatus.FAILED
        assert run["error"].startswith("CLI process gone: no heartbeat for ")
        assert STALE_S - 1 <= waited < STALE_S + 10, waited
    finally:
        kill(proc)


# ---------------------------------------------------------------------------------------------
# The Runs page with an interrupted CLI run (the defect of the issue)
# ---------------------------------------------------------------------------------------------
def test_the_runs_page_renders_when_a_cli_run_died_without_a_pid(tmp_path, monkeypatch):
    """A run row left ``running`` by a CLI process that recorded no pid (pd.NA) and stopped
    beating: the Runs page renders for everyone and marks it failed with the reason."""
    home = make_home(tmp_path / "home")
    monkeypatch.setenv("HDSU_HOME", str(home))
    monkeypatch.delenv("HDSU_DB", raising=False)
    for k, v in FAST_BEATS.items():
        monkeypatch.setenv(k, v)
    store = Store()
    store.create_run(
        "r-cli-gone", author="cli", method="hdsu", model="demo", dataset="demo", forget_concepts=["anxiety"], config={}
    )
    store.set_status("r-cli-gone", RunStatus.RUNNING, message="started")
    store.beat("r-cli-gone", executor="cli")  # no pid: a CLI run of another host / an older version
    assert store.list_runs()["pid"].isna().all()
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    at.switch_page("pages/runs.py").run()
    assert not at.exception and store.get_run("r-cli-gone")["status"] == RunStatus.RUNNING  # still beating
    time.sleep(STALE_S + 0.5)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    run = store.get_run("r-cli-gone")
    assert run["status"] == RunStatus.FAILED and run["error"].startswith("CLI process gone: no heartbeat for ")
    at.run()  # what anyone opening the page now sees
    assert not at.exception
    assert [e.value for e in at.error] == [f"Failure reason: {run['error']}"]


# ---------------------------------------------------------------------------------------------
# A write killed inside its transaction
# ---------------------------------------------------------------------------------------------
def test_a_process_killed_inside_a_write_leaves_the_old_rows_whole(tmp_path):
    store = Store(tmp_path / "h.duckdb")
    store.create_run("r1", author="a", method="hdsu", model="demo", dataset="demo", forget_concepts=["x"], config={})
    old = [{"item_id": f"i{i}", "split": "forget", "loss": 1.0, "option_logprobs": [-1.0] * 4} for i in range(500)]
    store.write_probe_results("r1", "after", old)
    code = """
        import sys
        from hdsu_core.store import Store
        store = Store(sys.argv[1])
        row = {"split": "retain", "loss": 2.0, "option_logprobs": [-2.0] * 4}
        rows = [{"item_id": f"n{i}", **row} for i in range(150_000)]
        print("writing", flush=True)
        store.write_probe_results("r1", "after", rows)  # replaces the 500 rows in one transaction
        print("written", flush=True)
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), str(store.path)],
        cwd=str(ROOT),
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"

        def inside() -> bool:  # the writer holds the lock: its transaction is open
            try:
                FileLock(str(store.lock_path), timeout=0).acquire().lock.release()
                return False
            except Timeout:
                return True

        wait_for("the writer inside its transaction", inside, timeout=60, every=0.005)
        proc.kill()
    finally:
        kill(proc)
    rows = store.probe_results("r1", "after")
    assert len(rows) in (500, 150_000)  # the old rows or the new ones, never a mixture
    assert len(rows) == 500 and set(rows["item_id"]) == {f"i{i}" for i in range(500)}
    store.write_metrics("r1", {"forget_acc_after": 0.5})  # and the database takes writes again
    assert store.metrics("r1") == {"forget_acc_after": 0.5}


# ---------------------------------------------------------------------------------------------
# Two runs at once
# ---------------------------------------------------------------------------------------------
DETERMINISTIC = ("forget_acc_after", "retain_acc_after", "holdout_acc_after", "mia_auc", "mia_auc_mink")
DETERMINISTIC += ("changed_weights", "ppl_after", "steps", "n_forget", "n_retain", "n_holdout")


def test_two_runs_at_once_give_the_numbers_of_one_after_the_other(tmp_path, monkeypatch):
    home = make_home(tmp_path / "home")
    monkeypatch.setenv("HDSU_HOME", str(home))
    configs = [RunConfig(forget=["anxiety"], **QUICK), RunConfig(forget=["asthma"], **QUICK)]
    seq = Store(tmp_path / "sequential.duckdb")
    sequential = []
    t0 = time.time()
    for cfg in configs:
        sequential.append(execute_run(seq, create_run(seq, cfg, author="t"), executor="cli"))
    print(f"\ntwo runs one after the other: {time.time() - t0:.1f} s")
    together = Store(tmp_path / "together.duckdb")
    t0 = time.time()
    ids = [jobs.launch(cfg, store=together, author="t") for cfg in configs]
    wait_for(
        "both workers to finish",
        lambda: all(together.get_run(r)["status"] not in (RunStatus.QUEUED, RunStatus.RUNNING) for r in ids),
        timeout=400,
        every=1.0,
    )
    print(f"\ntwo runs at once: {time.time() - t0:.1f} s")
    for rid, alone in zip(ids, sequential):
        run = together.get_run(rid)
        assert run["status"] == RunStatus.DONE, (run["error"], jobs.log_tail(rid))
        for key in DETERMINISTIC:
            assert run["summary"][key] == alone[key], key
        assert together.get_run_model(rid)["unlearned_root"] == alone["unlearned_root"]  # the very same weights
        assert probe_rows_whole(together, rid)
    counts = together.table_counts()
    assert counts["runs"] == 2 and counts["run_models"] == 2


# ---------------------------------------------------------------------------------------------
# The state directory and the disk
# ---------------------------------------------------------------------------------------------
def mount_tmpfs(path: Path, options: str):
    """Mount a tmpfs on ``path`` (as root); skip the test with the reason when that is not allowed
    (an unprivileged container). Returns the unmount."""
    path.mkdir(exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here although running as root: {r.stderr.strip() or r.returncode}")
    return lambda: subprocess.run(["umount", "-l", str(path)], check=False)


def _read_only_dir(path: Path):
    """A directory nobody may write: a read-only tmpfs as root (root ignores file modes), else 0o555."""
    path.mkdir()
    if os.geteuid() == 0:
        return mount_tmpfs(path, "ro,size=1m")
    path.chmod(0o555)
    return lambda: path.chmod(0o755)


def test_an_unwritable_hdsu_home_gives_one_clear_line_and_a_clear_page(tmp_path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    undo = _read_only_dir(ro)
    try:
        monkeypatch.delenv("HDSU_DB", raising=False)
        monkeypatch.setenv("HDSU_HOME", str(ro / "home"))  # cannot be created
        assert main(["runs", "list"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: HDSU_HOME {ro / 'home'} cannot be created (")
        assert "point HDSU_HOME at a writable directory" in err[0]
        monkeypatch.setenv("HDSU_HOME", str(ro))  # exists, but nothing can be written in it
        assert main(["run", *QUICK_CLI_ARGS]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: Cannot write the database ") and "HDSU_HOME" in err[0]
        at = AppTest.from_file(APP, default_timeout=90)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert any(e.value.startswith("The database is not available: Cannot write the database") for e in at.error)
        assert os.listdir(ro) == []
    finally:
        undo()


QUICK_CLI_ARGS = ["--method", "grad_ascent", "--set", "max_steps=2", "--forget", "anxiety", "--quiet"]


def fill(path: Path) -> None:
    """Write zeros until the disk has not one byte left."""
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC


def test_a_full_disk_gives_one_clear_line_and_the_earlier_runs_stay_intact(tmp_path, monkeypatch, capsys):
    if os.geteuid() != 0:
        pytest.skip("mounting the small tmpfs that fills up needs root; this test runs as a normal user")
    disk = tmp_path / "disk"
    unmount = mount_tmpfs(disk, "size=8m")
    try:
        home = make_home(disk / "home")
        monkeypatch.setenv("HDSU_HOME", str(home))
        monkeypatch.setenv("HDSU_RUN_MODELS", str(disk / "run_models"))
        monkeypatch.delenv("HDSU_DB", raising=False)
        store = Store()
        metrics = seed_run(store)  # an earlier run: its probe rows, metrics and generations
        before, probes = store.table_counts(), store.probe_results("r-seeded")
        fill(disk / "filler")
        assert main(["run", *QUICK_CLI_ARGS]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: No space left on the disk of {store.path}"), err
        assert "what was stored before is intact" in err[0]
        at = AppTest.from_file(APP, default_timeout=90)
        at.run()
        at.switch_page("pages/runs.py").run()
        assert not at.exception, [e.value for e in at.exception]
        assert store.table_counts() == before and store.metrics("r-seeded") == pytest.approx(metrics)
        (disk / "filler").unlink()
        assert store.table_counts() == before
        assert store.probe_results("r-seeded").equals(probes)
        store.log_event("t", "after_the_disk_was_freed")  # writes work again
    finally:
        unmount()


def test_a_database_held_by_another_program_gives_a_clear_message_after_the_retries(tmp_path, monkeypatch, capsys):
    db = tmp_path / "held.duckdb"
    store = Store(db)
    seed_run(store)
    before = store.table_counts()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        t0 = time.time()
        assert main(["runs", "list", "--db", str(db)]) == 1
        waited = time.time() - t0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert err[0].startswith(f"error: Database {db} is held open by another program (")
        assert f"PID {holder.pid})" in err[0] and err[0].endswith("close it and retry (gave up after 7 attempts)")
        assert waited >= 3.0  # the retries with backoff came first
        monkeypatch.setenv("HDSU_DB", str(db))
        at = AppTest.from_file(APP, default_timeout=90)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert any("is held open by another program" in e.value for e in at.error)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert store.table_counts() == before  # released: everything is there
