"""Persistent state in one DuckDB file: the only module of HDSU Studio that contains SQL.

Concurrency design
------------------
DuckDB lets exactly one *process* hold a database file open read-write, and a read-only
connection from another process conflicts with it as well ("Could not set lock on file").
The Streamlit app and the separate worker processes (``jobs.py``) all need the same file, so
no process keeps a connection open:

* every public method opens a short-lived connection while holding a cross-process
  ``filelock.FileLock`` on ``<db>.lock`` (default timeout 30 s), runs its statements in one
  transaction (``BEGIN`` ... ``COMMIT``, ``ROLLBACK`` on any error, so every write is
  atomic), and closes the connection before releasing the lock;
* the file lock is an OS ``flock``: when a process dies, even by SIGKILL, the kernel
  releases it, and DuckDB's own file lock likewise, so a crashed worker never wedges the
  database; its uncommitted transaction is simply lost;
* should DuckDB still refuse the file (another program holding it outside our lock, e.g.
  the DuckDB CLI), opening is retried with exponential backoff a few times before a
  :class:`StoreError` is raised;
* the file lock uses a fresh ``FileLock`` object per call, so threads of one process (the
  Streamlit server) are serialised just like processes. Public methods never call each other
  while holding the lock (internal helpers take the open connection instead).

Opening a connection costs DuckDB 2.x about 25-40 ms, so one call costs that much; callers
that write many rows should use the bulk methods (``write_probe_results`` etc.), not loops.

Schema and migrations
---------------------
``schema_version`` records each applied migration. :data:`MIGRATIONS` is an ordered list of
``(version, [sql, ...])``; ``Store(path)`` applies the missing ones, each in its own
transaction, when it is constructed. A database whose version is newer than the newest known
migration is refused with a :class:`StoreError` (upgrade the code rather than risk it).

Conventions
-----------
* Timestamps are ``TIMESTAMP`` columns holding **UTC** (naive ``datetime`` values in Python).
* JSON payloads are stored as VARCHAR text. Readers decode them: a column ``foo_json`` is
  returned as ``foo`` (decoded Python object); ``runs.forget_concepts`` keeps its name and is
  returned as a list. ``hierarchy_json``/``diff_json`` come back as ``hierarchy``/``diff``.
* Every public method returns plain Python objects or pandas DataFrames.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import math
import re
import time
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterator

import duckdb
import pandas as pd
from filelock import FileLock, Timeout

from . import paths
from .audit_chain import GENESIS, event_hash

__all__ = [
    "Store",
    "StoreError",
    "MIGRATIONS",
    "RUN_STATUSES",
    "RunStatus",
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "PROBE_PHASES",
    "PROBE_SPLITS",
]


class StoreError(RuntimeError):
    """Anything that went wrong in the store, with a message fit for a user."""


class RunStatus(StrEnum):
    """The one spelling of a run's status (a ``str``: compares equal to the stored text)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


RUN_STATUSES = tuple(RunStatus)
ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
TERMINAL_STATUSES = (RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED)
PROBE_PHASES = ("before", "after")
PROBE_SPLITS = ("forget", "retain", "holdout")

# ---------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------

_BOOTSTRAP = "CREATE TABLE IF NOT EXISTS schema_version ( version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL)"

# A migration step is an SQL statement or a function of the open connection (data backfills).
MIGRATIONS: list[tuple[int, list]] = [
    (
        1,
        [
            """CREATE TABLE hierarchy_versions (
                version_id INTEGER PRIMARY KEY,
                created_at TIMESTAMP NOT NULL,
                author VARCHAR NOT NULL,
                message VARCHAR NOT NULL DEFAULT '',
                hierarchy_json VARCHAR NOT NULL,
                diff_json VARCHAR,
                parent_version INTEGER
            )""",
            """CREATE TABLE runs (
                run_id VARCHAR PRIMARY KEY,
                created_at TIMESTAMP NOT NULL,
                author VARCHAR,
                status VARCHAR NOT NULL,
                method VARCHAR,
                model VARCHAR,
                dataset VARCHAR,
                forget_concepts VARCHAR,
                config_json VARCHAR,
                config_hash VARCHAR,
                model_hash VARCHAR,
                hierarchy_version INTEGER,
                phase VARCHAR,
                progress DOUBLE NOT NULL DEFAULT 0,
                message VARCHAR,
                started_at TIMESTAMP,
                finished_at TIMESTAMP,
                pid INTEGER,
                error VARCHAR,
                summary_json VARCHAR
            )""",
            "CREATE SEQUENCE run_progress_seq START 1",
            """CREATE TABLE run_progress (
                seq BIGINT NOT NULL DEFAULT nextval('run_progress_seq'),
                run_id VARCHAR NOT NULL,
                ts TIMESTAMP NOT NULL,
                phase VARCHAR,
                progress DOUBLE,
                message VARCHAR
            )""",
            """CREATE TABLE probe_results (
                run_id VARCHAR NOT NULL,
                phase VARCHAR NOT NULL,
                item_id VARCHAR NOT NULL,
                split VARCHAR,
                concept_id VARCHAR,
                correct BOOLEAN,
                pred INTEGER,
                answer INTEGER,
                answer_logprob DOUBLE,
                loss DOUBLE,
                mink DOUBLE,
                option_logprobs_json VARCHAR
            )""",
            """CREATE TABLE metrics (
                run_id VARCHAR NOT NULL,
                name VARCHAR NOT NULL,
                value DOUBLE
            )""",
            """CREATE TABLE generations (
                run_id VARCHAR NOT NULL,
                phase VARCHAR NOT NULL,
                prompt_id VARCHAR NOT NULL,
                prompt VARCHAR,
                output VARCHAR
            )""",
            "CREATE SEQUENCE audit_events_seq START 1",
            """CREATE TABLE audit_events (
                event_id BIGINT PRIMARY KEY DEFAULT nextval('audit_events_seq'),
                ts TIMESTAMP NOT NULL,
                actor VARCHAR NOT NULL,
                action VARCHAR NOT NULL,
                run_id VARCHAR,
                details_json VARCHAR
            )""",
            """CREATE TABLE bench_results (
                bench_id VARCHAR NOT NULL,
                created_at TIMESTAMP NOT NULL,
                dataset VARCHAR NOT NULL,
                method VARCHAR NOT NULL,
                metrics_json VARCHAR
            )""",
            "CREATE INDEX probe_results_run_idx ON probe_results(run_id, phase)",
            "CREATE INDEX run_progress_run_idx ON run_progress(run_id)",
            "CREATE INDEX audit_events_run_idx ON audit_events(run_id)",
        ],
    ),
    (
        2,
        [
            # One row per finished run: its receipt, and where its model files (the delta) are.
            """CREATE TABLE run_models (
                run_id VARCHAR PRIMARY KEY,
                created_at TIMESTAMP NOT NULL,
                parent_run_id VARCHAR,
                base_model VARCHAR,
                original_root VARCHAR NOT NULL,
                unlearned_root VARCHAR NOT NULL,
                receipt_sha256 VARCHAR NOT NULL,
                receipt_json VARCHAR NOT NULL,
                files_dir VARCHAR,
                files_bytes BIGINT,
                files_deleted_at TIMESTAMP
            )""",
        ],
    ),
    (
        3,
        [
            # Liveness that does not depend on a pid: every executing run stamps heartbeat_at at
            # least every few seconds (liveness.Heartbeat); executor and host say who ran it, so a
            # stale run is reported as "worker gone" or "CLI process gone", and its pid is only
            # trusted on the host that recorded it.
            "ALTER TABLE runs ADD COLUMN heartbeat_at TIMESTAMP",
            "ALTER TABLE runs ADD COLUMN executor VARCHAR",
            "ALTER TABLE runs ADD COLUMN host VARCHAR",
        ],
    ),
    (
        4,
        [
            # The audit log becomes a hash chain (audit_chain.py); events written before get their
            # hashes now, in id order. Local accounts and their roles (security/).
            "ALTER TABLE audit_events ADD COLUMN prev_hash VARCHAR",
            "ALTER TABLE audit_events ADD COLUMN event_hash VARCHAR",
            lambda con: _backfill_audit_chain(con),
            """CREATE TABLE users (
                username VARCHAR PRIMARY KEY,
                role VARCHAR NOT NULL,
                password_hash VARCHAR,
                created_at TIMESTAMP NOT NULL,
                created_by VARCHAR NOT NULL,
                disabled BOOLEAN NOT NULL DEFAULT FALSE
            )""",
        ],
    ),
]

# Columns of ``runs`` that update_run may set; aliases map friendly names onto columns.
_RUN_UPDATABLE = (
    "author",
    "status",
    "method",
    "model",
    "dataset",
    "forget_concepts",
    "config_json",
    "config_hash",
    "model_hash",
    "hierarchy_version",
    "phase",
    "progress",
    "message",
    "started_at",
    "finished_at",
    "pid",
    "error",
    "summary_json",
)
_RUN_ALIASES = {"config": "config_json", "summary": "summary_json"}
_RUN_JSON_COLUMNS = ("forget_concepts", "config_json", "summary_json")

_PROBE_COLUMNS = (
    "item_id",
    "split",
    "concept_id",
    "correct",
    "pred",
    "answer",
    "answer_logprob",
    "loss",
    "mink",
    "option_logprobs_json",
)

# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


# filelock polls a held lock; its 50 ms default would idle away most of a busy database's time.
_LOCK_POLL_S = 0.005


def _backfill_audit_chain(con: duckdb.DuckDBPyConnection) -> None:
    """Hash the events that predate the chain, in id order, renumbered 1..N without gaps."""
    rows = con.execute(
        "SELECT event_id, ts, actor, action, run_id, details_json FROM audit_events ORDER BY event_id"
    ).fetchall()
    con.execute("DELETE FROM audit_events")
    prev = GENESIS
    for new_id, (_, ts, actor, action, run_id, details) in enumerate(rows, 1):
        own = event_hash(new_id, ts, actor, action, run_id, details, prev)
        con.execute(
            "INSERT INTO audit_events (event_id, ts, actor, action, run_id, details_json, prev_hash, event_hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [new_id, ts, actor, action, run_id, details, prev, own],
        )
        prev = own


def _now() -> _dt.datetime:
    """Current UTC time as a naive datetime (what TIMESTAMP columns hold)."""
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset, tuple)):
        return sorted(obj) if isinstance(obj, (set, frozenset)) else list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise StoreError(f"Value cannot be stored as JSON: {e}") from e


def _loads(text: Any) -> Any:
    if text is None or (isinstance(text, float) and math.isnan(text)) or text is pd.NA:
        return None
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text  # not JSON after all: hand back the raw text rather than failing a read


def _decode_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Decode JSON columns: ``foo_json`` -> ``foo``; ``forget_concepts`` in place."""
    renames = {}
    for col in list(df.columns):
        if col.endswith("_json"):
            df[col] = df[col].astype(object).map(_loads)
            renames[col] = col[: -len("_json")]
        elif col == "forget_concepts":
            df[col] = df[col].astype(object).map(_loads)
    return df.rename(columns=renames)


def _decode_row(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k.endswith("_json"):
            out[k[: -len("_json")]] = _loads(v)
        elif k == "forget_concepts":
            out[k] = _loads(v)
        else:
            out[k] = v
    return out


def _fetch_dicts(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def _opt_float(v: Any) -> float | None:
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError) as e:
        raise StoreError(f"Expected a number, got {v!r}") from e


def _opt_int(v: Any) -> int | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    try:
        return int(v)
    except (TypeError, ValueError) as e:
        raise StoreError(f"Expected an integer, got {v!r}") from e


def _is_lock_error(e: BaseException) -> bool:
    msg = str(e).lower()
    return "could not set lock" in msg or "conflicting lock" in msg or "resource temporarily unavailable" in msg


def _holder(e: BaseException) -> str:
    """Who holds the file, from DuckDB's lock message ("... is held in /usr/bin/prog (PID 123)")."""
    m = re.search(r"held in (\S+) \(PID (\d+)\)", str(e))
    return f" ({Path(m.group(1)).name}, PID {m.group(2)})" if m else ""


def _disk_full(e: BaseException) -> bool:
    return "no space left" in str(e).lower() or getattr(e, "errno", None) == errno.ENOSPC


def _io_message(path: Path, e: BaseException) -> str:
    """One line for a database operation that failed on the disk: full, read-only or forbidden."""
    if _disk_full(e):
        return (
            f"No space left on the disk of {path}: the change was not saved (what was stored before "
            f"is intact); free some space and retry"
        )
    reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
    return f"Cannot write the database {path} ({reason}); point HDSU_HOME (or HDSU_DB) at a writable directory"


# ---------------------------------------------------------------------------------------
# Store
# ---------------------------------------------------------------------------------------


class Store:
    """The project's DuckDB database. Cheap to construct; holds no open connection.

    ``lock_timeout``: seconds to wait for the cross-process file lock.
    ``open_retries``: extra attempts (exponential backoff from 50 ms) when DuckDB itself
    reports that another process holds the file.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        lock_timeout: float = 30.0,
        open_retries: int = 6,
    ) -> None:
        self.path = Path(path) if path is not None else paths.default_db()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(_io_message(self.path, e)) from None
        self.lock_path = Path(str(self.path) + ".lock")
        self.lock_timeout = float(lock_timeout)
        self.open_retries = int(open_retries)
        self._migrate()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- connection management ---------------------------------------------------------

    def _connect(self) -> duckdb.DuckDBPyConnection:
        delay = 0.05
        for attempt in range(self.open_retries + 1):
            try:
                return duckdb.connect(str(self.path))
            except duckdb.Error as e:
                if _is_lock_error(e) and attempt < self.open_retries:
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if _is_lock_error(e):
                    raise StoreError(
                        f"Database {self.path} is held open by another program{_holder(e)}: close it and retry "
                        f"(gave up after {self.open_retries + 1} attempts)"
                    ) from e
                if _disk_full(e) or "read-only" in str(e).lower() or "permission denied" in str(e).lower():
                    raise StoreError(_io_message(self.path, e)) from e
                raise StoreError(f"Cannot open database {self.path}: {str(e).splitlines()[0]}") from e
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Lock, connect, BEGIN; COMMIT on success, ROLLBACK on error; close, unlock."""
        lock = FileLock(
            str(self.lock_path),
            timeout=self.lock_timeout,
            thread_local=False,
            poll_interval=_LOCK_POLL_S,
        )
        try:
            lock.acquire()
        except Timeout as e:
            raise StoreError(
                f"Timed out after {self.lock_timeout:g} s waiting for the database lock "
                f"{self.lock_path} (another process is using the database)"
            ) from e
        except OSError as e:  # the lock file cannot be created: a read-only or full disk
            raise StoreError(_io_message(self.lock_path, e)) from e
        try:
            con = self._connect()
            try:
                con.execute("BEGIN TRANSACTION")
                try:
                    yield con
                except BaseException:
                    try:
                        con.execute("ROLLBACK")
                    except duckdb.Error:
                        pass
                    raise
                con.execute("COMMIT")
            except duckdb.Error as e:
                if _disk_full(e):
                    raise StoreError(_io_message(self.path, e)) from e
                raise StoreError(f"Database error in {self.path}: {e}") from e
            finally:
                con.close()
        finally:
            lock.release()

    # -- schema ----------------------------------------------------------------------------

    @staticmethod
    def _current_version(con: duckdb.DuckDBPyConnection) -> int:
        row = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        return int(row[0])  # type: ignore[index]  # an aggregate: always one row

    def _migrate(self) -> None:
        known = max(v for v, _ in MIGRATIONS) if MIGRATIONS else 0
        with self._session() as con:
            con.execute(_BOOTSTRAP)
            current = self._current_version(con)
        if current > known:
            raise StoreError(
                f"Database {self.path} has schema version {current}, but this version of HDSU "
                f"Studio only knows up to {known}. Upgrade HDSU Studio, or point HDSU_DB at "
                f"another file."
            )
        for version, statements in sorted(MIGRATIONS, key=lambda m: m[0]):
            if version <= current:
                continue
            with self._session() as con:
                # Re-check inside the lock: another process may have migrated meanwhile.
                if self._current_version(con) >= version:
                    continue
                for sql in statements:
                    sql(con) if callable(sql) else con.execute(sql)
                con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, _now()])

    def schema_version(self) -> int:
        with self._session() as con:
            return self._current_version(con)

    def table_names(self) -> list[str]:
        """Names of the tables in the database (sorted)."""
        with self._session() as con:
            rows = con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY table_name"
            ).fetchall()
        return [r[0] for r in rows]

    # -- hierarchy versions ----------------------------------------------------------------

    def save_hierarchy_version(
        self, hierarchy_json: dict, author: str, message: str = "", diff: dict | None = None
    ) -> int:
        """Store a new hierarchy version; its parent is the previous latest. Returns its id."""
        if not isinstance(hierarchy_json, dict):
            raise StoreError("hierarchy_json must be a dict (the hierarchy JSON document)")
        payload = _dumps(hierarchy_json)
        diff_text = _dumps(diff)
        with self._session() as con:
            parent = con.execute("SELECT max(version_id) FROM hierarchy_versions").fetchone()[0]  # type: ignore[index]
            vid = (parent or 0) + 1
            con.execute(
                "INSERT INTO hierarchy_versions VALUES (?, ?, ?, ?, ?, ?, ?)",
                [vid, _now(), str(author), message or "", payload, diff_text, parent],
            )
        return int(vid)

    _HV_SELECT = (
        "SELECT version_id, created_at, author, message, hierarchy_json, diff_json, parent_version "
        "FROM hierarchy_versions "
    )

    def latest_hierarchy_version(self) -> dict | None:
        with self._session() as con:
            rows = _fetch_dicts(con, self._HV_SELECT + "ORDER BY version_id DESC LIMIT 1")
        return _decode_row(rows[0]) if rows else None

    def get_hierarchy_version(self, version_id: int) -> dict:
        with self._session() as con:
            rows = _fetch_dicts(con, self._HV_SELECT + "WHERE version_id = ?", [int(version_id)])
        if not rows:
            raise StoreError(f"No hierarchy version {version_id}")
        return _decode_row(rows[0])

    def list_hierarchy_versions(self) -> pd.DataFrame:
        """Newest first; columns version_id, created_at, author, message, parent_version."""
        with self._session() as con:
            return con.execute(
                "SELECT version_id, created_at, author, message, parent_version "
                "FROM hierarchy_versions ORDER BY version_id DESC"
            ).df()

    # -- runs ------------------------------------------------------------------------------

    def create_run(
        self,
        run_id: str,
        *,
        author: str,
        method: str,
        model: str,
        dataset: str,
        forget_concepts: list[str],
        config: dict,
        config_hash: str = "",
        model_hash: str = "",
        hierarchy_version: int | None = None,
    ) -> None:
        """New run with status 'queued' and progress 0. Duplicate run ids are refused."""
        if not run_id or not isinstance(run_id, str):
            raise StoreError("run_id must be a non-empty string")
        if isinstance(forget_concepts, str):
            raise StoreError("forget_concepts must be a list of concept ids, not a string")
        with self._session() as con:
            if self._run_exists(con, run_id):
                raise StoreError(f"Run {run_id!r} already exists")
            con.execute(
                "INSERT INTO runs (run_id, created_at, author, status, method, model, dataset, "
                "forget_concepts, config_json, config_hash, model_hash, hierarchy_version, "
                "progress) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                [
                    run_id,
                    _now(),
                    author,
                    method,
                    model,
                    dataset,
                    _dumps(list(forget_concepts or [])),
                    _dumps(config or {}),
                    config_hash or "",
                    model_hash or "",
                    _opt_int(hierarchy_version),
                ],
            )

    @staticmethod
    def _run_exists(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
        return con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone() is not None

    def _require_run(self, con: duckdb.DuckDBPyConnection, run_id: str) -> None:
        if not self._run_exists(con, run_id):
            raise StoreError(f"Unknown run {run_id!r}")

    @staticmethod
    def _check_status(status: str) -> str:
        if status not in RUN_STATUSES:
            raise StoreError(f"Invalid run status {status!r}; expected one of {', '.join(RUN_STATUSES)}")
        return str(RunStatus(status))

    def update_run(self, run_id: str, /, **fields: Any) -> None:
        """Set columns of a run. ``config``/``summary`` are accepted for the ``*_json``
        columns. JSON columns (forget_concepts, config_json, summary_json) take Python
        objects, which are always JSON-encoded; dict/list values for other columns are
        JSON-encoded too. ``progress`` is clamped to [0, 1]; ``status`` is validated
        (timestamps are stamped only by set_status). Unknown run or field -> StoreError."""
        if not fields:
            return
        cols: dict[str, Any] = {}
        for key, value in fields.items():
            col = _RUN_ALIASES.get(key, key)
            if col not in _RUN_UPDATABLE:
                raise StoreError(
                    f"update_run: unknown or read-only field {key!r}; allowed: "
                    f"{', '.join(sorted(_RUN_UPDATABLE + tuple(_RUN_ALIASES)))}"
                )
            if col == "status":
                value = self._check_status(value)
            if col == "progress":
                value = min(1.0, max(0.0, _opt_float(value) or 0.0))
            elif col in ("pid", "hierarchy_version"):
                value = _opt_int(value)
            elif col in _RUN_JSON_COLUMNS or isinstance(value, (dict, list, tuple)):
                value = _dumps(value)  # JSON columns always take Python objects
            cols[col] = value
        assignments = ", ".join(f"{c} = ?" for c in cols)  # names come from the whitelist
        with self._session() as con:
            self._require_run(con, run_id)
            con.execute(f"UPDATE runs SET {assignments} WHERE run_id = ?", [*cols.values(), run_id])

    def set_status(self, run_id: str, status: str, *, error: str | None = None, message: str | None = None) -> None:
        """Change status; 'running' stamps started_at (first time), terminal states stamp finished_at."""
        status = self._check_status(status)
        now = _now()
        sets = ["status = ?"]
        params: list[Any] = [status]
        if status == "running":
            sets.append("started_at = coalesce(started_at, ?)")
            params.append(now)
        if status in TERMINAL_STATUSES:
            sets.append("finished_at = ?")
            params.append(now)
        if error is not None:
            sets.append("error = ?")
            params.append(error)
        if message is not None:
            sets.append("message = ?")
            params.append(message)
        with self._session() as con:
            self._require_run(con, run_id)
            con.execute(f"UPDATE runs SET {', '.join(sets)} WHERE run_id = ?", [*params, run_id])

    def _add_progress(
        self, con: duckdb.DuckDBPyConnection, run_id: str, phase: str, progress: float, message: str
    ) -> None:
        self._require_run(con, run_id)
        p = min(1.0, max(0.0, _opt_float(progress) or 0.0))
        con.execute(
            "INSERT INTO run_progress (run_id, ts, phase, progress, message) VALUES (?, ?, ?, ?, ?)",
            [run_id, _now(), phase, p, message or ""],
        )
        con.execute(
            "UPDATE runs SET phase = ?, progress = ?, message = ? WHERE run_id = ?",
            [phase, p, message or "", run_id],
        )

    def add_progress(self, run_id: str, phase: str, progress: float, message: str = "") -> None:
        """Append to the progress log and update the run's phase/progress/message atomically.
        ``progress`` is clamped to [0, 1]."""
        with self._session() as con:
            self._add_progress(con, run_id, phase, progress, message)

    def get_run(self, run_id: str) -> dict | None:
        """The run as a dict (``config``, ``summary`` and ``forget_concepts`` decoded)."""
        with self._session() as con:
            rows = _fetch_dicts(con, "SELECT * FROM runs WHERE run_id = ?", [run_id])
        return _decode_row(rows[0]) if rows else None

    def list_runs(self, limit: int = 100, status: str | None = None) -> pd.DataFrame:
        """Newest first. JSON columns decoded (``config``, ``summary``, ``forget_concepts``)."""
        sql = "SELECT * FROM runs"
        params: list[Any] = []
        if status is not None:
            self._check_status(status)
            sql += " WHERE status = ?"
            params.append(status)
        sql += " ORDER BY created_at DESC, run_id DESC LIMIT ?"
        params.append(int(limit))
        with self._session() as con:
            df = con.execute(sql, params).df()
        return _decode_frame(df)

    def progress_log(self, run_id: str, limit: int = 50) -> pd.DataFrame:
        """The last ``limit`` progress entries of a run, oldest first (ts, phase, progress, message)."""
        with self._session() as con:
            df = con.execute(
                "SELECT run_id, ts, phase, progress, message FROM ("
                " SELECT * FROM run_progress WHERE run_id = ? ORDER BY seq DESC LIMIT ?"
                ") ORDER BY seq",
                [run_id, int(limit)],
            ).df()
        return df

    def delete_run(self, run_id: str, *, keep_audit: bool = True) -> bool:
        """Remove a run and all its rows (progress, probes, metrics, generations). Audit events
        and receipts are kept unless ``keep_audit=False`` (the audit trail outlives runs). Returns whether
        the run existed."""
        tables = ["run_progress", "probe_results", "metrics", "generations"]
        if not keep_audit:  # receipts outlive runs like the audit trail does
            tables += ["audit_events", "run_models"]
        with self._session() as con:
            existed = self._run_exists(con, run_id)
            for t in tables:
                con.execute(f"DELETE FROM {t} WHERE run_id = ?", [run_id])
            con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
        return existed

    # -- results ---------------------------------------------------------------------------

    def write_probe_results(self, run_id: str, phase: str, rows: list[dict]) -> None:
        """Replace the probe rows of (run_id, phase) with ``rows``. Each row: item_id, split,
        concept_id, correct, pred, answer, answer_logprob, loss, mink, option_logprobs (list;
        or option_logprobs_json text). Missing keys are NULL."""
        if phase not in PROBE_PHASES:
            raise StoreError(f"Invalid probe phase {phase!r}; expected one of {', '.join(PROBE_PHASES)}")
        records = []
        for i, r in enumerate(rows):
            if "item_id" not in r or r["item_id"] is None:
                raise StoreError(f"probe row {i} has no item_id")
            split = r.get("split")
            if split is not None and split not in PROBE_SPLITS:
                raise StoreError(f"probe row {i}: invalid split {split!r}; expected one of {', '.join(PROBE_SPLITS)}")
            olp = r.get("option_logprobs_json")
            if olp is None and r.get("option_logprobs") is not None:
                olp = _dumps(r["option_logprobs"])
            elif olp is not None and not isinstance(olp, str):
                olp = _dumps(olp)
            correct = r.get("correct")
            records.append(
                (
                    str(r["item_id"]),
                    split,
                    None if r.get("concept_id") is None else str(r["concept_id"]),
                    None if correct is None else bool(correct),
                    _opt_int(r.get("pred")),
                    _opt_int(r.get("answer")),
                    _opt_float(r.get("answer_logprob")),
                    _opt_float(r.get("loss")),
                    _opt_float(r.get("mink")),
                    olp,
                )
            )
        cols = list(zip(*records)) if records else [()] * len(_PROBE_COLUMNS)
        dtypes = ["string", "string", "string", "boolean", "Int64", "Int64", "Float64", "Float64", "Float64", "string"]
        frame = pd.DataFrame(
            {name: pd.array(list(values), dtype=dt) for name, values, dt in zip(_PROBE_COLUMNS, cols, dtypes)}
        )
        with self._session() as con:
            con.execute("DELETE FROM probe_results WHERE run_id = ? AND phase = ?", [run_id, phase])
            if len(frame):
                con.register("_probe_in", frame)
                try:
                    con.execute(
                        "INSERT INTO probe_results SELECT ?, ?, item_id, split, concept_id, "
                        "correct, pred, answer, answer_logprob, loss, mink, option_logprobs_json "
                        "FROM _probe_in",
                        [run_id, phase],
                    )
                finally:
                    con.unregister("_probe_in")

    def probe_results(self, run_id: str, phase: str | None = None) -> pd.DataFrame:
        """Probe rows (``option_logprobs`` decoded to lists), ordered by phase then item_id."""
        sql = "SELECT * FROM probe_results WHERE run_id = ?"
        params: list[Any] = [run_id]
        if phase is not None:
            sql += " AND phase = ?"
            params.append(phase)
        sql += " ORDER BY CASE phase WHEN 'before' THEN 0 ELSE 1 END, item_id"
        with self._session() as con:
            df = con.execute(sql, params).df()
        return _decode_frame(df)

    def write_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        """Upsert: metrics named here replace any stored under the same names."""
        items = [(str(k), _opt_float(v)) for k, v in (metrics or {}).items()]
        if not items:
            return
        with self._session() as con:
            con.executemany("DELETE FROM metrics WHERE run_id = ? AND name = ?", [[run_id, k] for k, _ in items])
            con.executemany("INSERT INTO metrics VALUES (?, ?, ?)", [[run_id, k, v] for k, v in items])

    def metrics(self, run_id: str) -> dict[str, float]:
        with self._session() as con:
            rows = con.execute("SELECT name, value FROM metrics WHERE run_id = ? ORDER BY name", [run_id]).fetchall()
        return {name: value for name, value in rows}

    def write_generations(self, run_id: str, phase: str, rows: list[dict]) -> None:
        """Replace the generations of (run_id, phase); rows carry prompt_id, prompt, output."""
        records = []
        for i, r in enumerate(rows):
            if r.get("prompt_id") is None:
                raise StoreError(f"generation row {i} has no prompt_id")
            records.append([run_id, phase, str(r["prompt_id"]), r.get("prompt"), r.get("output")])
        with self._session() as con:
            con.execute("DELETE FROM generations WHERE run_id = ? AND phase = ?", [run_id, phase])
            if records:
                con.executemany("INSERT INTO generations VALUES (?, ?, ?, ?, ?)", records)

    def generations(self, run_id: str) -> pd.DataFrame:
        with self._session() as con:
            return con.execute(
                "SELECT * FROM generations WHERE run_id = ? "
                "ORDER BY CASE phase WHEN 'before' THEN 0 WHEN 'after' THEN 1 ELSE 2 END, phase, prompt_id",
                [run_id],
            ).df()

    # -- audit -----------------------------------------------------------------------------

    def _log_event(
        self, con: duckdb.DuckDBPyConnection, actor: str, action: str, run_id: str | None, details: dict | None
    ) -> None:
        """Append one event to the hash chain. Ids are assigned here (max + 1, under the file lock),
        not by the sequence: a rolled-back insert would burn a sequence value and leave a gap that
        reads as a deleted event."""
        last = con.execute("SELECT event_id, event_hash FROM audit_events ORDER BY event_id DESC LIMIT 1").fetchone()
        event_id, prev = (int(last[0]) + 1, last[1] or GENESIS) if last else (1, GENESIS)
        ts, details_json = _now(), _dumps(details or {})
        own = event_hash(event_id, ts, str(actor), str(action), run_id, details_json, prev)
        con.execute(
            "INSERT INTO audit_events (event_id, ts, actor, action, run_id, details_json, prev_hash, event_hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [event_id, ts, str(actor), str(action), run_id, details_json, prev, own],
        )

    def log_event(self, actor: str, action: str, run_id: str | None = None, details: dict | None = None) -> None:
        with self._session() as con:
            self._log_event(con, actor, action, run_id, details)

    def audit_events(self, run_id: str | None = None, limit: int = 500) -> pd.DataFrame:
        """Newest first; ``details`` decoded."""
        sql = "SELECT event_id, ts, actor, action, run_id, details_json FROM audit_events"
        params: list[Any] = []
        if run_id is not None:
            sql += " WHERE run_id = ?"
            params.append(run_id)
        sql += " ORDER BY event_id DESC LIMIT ?"
        params.append(int(limit))
        with self._session() as con:
            df = con.execute(sql, params).df()
        return _decode_frame(df)

    # -- benchmarks ------------------------------------------------------------------------

    def save_bench(self, bench_id: str, dataset: str, rows: list[dict]) -> None:
        """Replace the rows of (bench_id, dataset). Each row needs ``method``; its metrics are
        ``row["metrics"]`` if given, else all other keys of the row."""
        now = _now()
        records = []
        for i, r in enumerate(rows):
            if not r.get("method"):
                raise StoreError(f"bench row {i} has no method")
            m = r["metrics"] if "metrics" in r else {k: v for k, v in r.items() if k != "method"}
            records.append([str(bench_id), now, str(dataset), str(r["method"]), _dumps(m)])
        with self._session() as con:
            con.execute("DELETE FROM bench_results WHERE bench_id = ? AND dataset = ?", [bench_id, dataset])
            if records:
                con.executemany("INSERT INTO bench_results VALUES (?, ?, ?, ?, ?)", records)

    def bench_results(self, bench_id: str | None = None) -> pd.DataFrame:
        """Columns bench_id, created_at, dataset, method, metrics (decoded dict)."""
        sql = "SELECT * FROM bench_results"
        params: list[Any] = []
        if bench_id is not None:
            sql += " WHERE bench_id = ?"
            params.append(bench_id)
        sql += " ORDER BY created_at DESC, bench_id, dataset, method"
        with self._session() as con:
            df = con.execute(sql, params).df()
        return _decode_frame(df)

    # -- run models (receipts and model files) ------------------------------------------------

    def save_run_model(self, row: dict) -> None:
        """Insert the receipt row of a finished run (``receipt`` a dict; see artifacts.run_models)."""
        with self._session() as con:
            self._require_run(con, row["run_id"])
            con.execute(
                "INSERT INTO run_models (run_id, created_at, parent_run_id, base_model, original_root, unlearned_root, "
                "receipt_sha256, receipt_json, files_dir, files_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    row["run_id"],
                    _now(),
                    row.get("parent_run_id"),
                    row.get("base_model"),
                    row["original_root"],
                    row["unlearned_root"],
                    row["receipt_sha256"],
                    row["receipt_json"],
                    row.get("files_dir"),
                    row.get("files_bytes"),
                ],
            )

    def get_run_model(self, run_id: str) -> dict | None:
        """The receipt row of ``run_id`` (``receipt`` decoded), or None."""
        with self._session() as con:
            rows = _fetch_dicts(con, "SELECT * FROM run_models WHERE run_id = ?", [run_id])
        return _decode_row(rows[0]) if rows else None

    def list_run_models(self) -> pd.DataFrame:
        """Every receipt row with its run's method, forget selection, status and author; oldest first."""
        sql = (
            "SELECT m.run_id, m.created_at, m.parent_run_id, m.base_model, m.original_root, m.unlearned_root, "
            "m.receipt_sha256, m.files_dir, m.files_bytes, m.files_deleted_at, r.method, r.forget_concepts, "
            "r.dataset, r.author FROM run_models m LEFT JOIN runs r USING (run_id) ORDER BY m.created_at, m.run_id"
        )
        with self._session() as con:
            df = con.execute(sql).df()
        return _decode_frame(df)

    def child_run_models(self, run_id: str) -> list[str]:
        """Runs that started from ``run_id``'s unlearned model and still have their files."""
        with self._session() as con:
            rows = con.execute(
                "SELECT run_id FROM run_models WHERE parent_run_id = ? AND files_deleted_at IS NULL ORDER BY run_id",
                [run_id],
            ).fetchall()
        return [r[0] for r in rows]

    def mark_model_files_deleted(self, run_id: str, actor: str, details: dict) -> None:
        """Record that a run's model files are gone (the receipt stays), with its audit event."""
        with self._session() as con:
            con.execute("UPDATE run_models SET files_deleted_at = ? WHERE run_id = ?", [_now(), run_id])
            self._log_event(con, actor, "model_files_deleted", run_id, details)

    # -- audit chain -----------------------------------------------------------------------------

    def audit_chain_rows(self) -> list[tuple]:
        """Every audit event as (event_id, ts, actor, action, run_id, details_json, prev_hash,
        event_hash), oldest first: what ``audit_chain.verify_rows`` checks."""
        with self._session() as con:
            return con.execute(
                "SELECT event_id, ts, actor, action, run_id, details_json, prev_hash, event_hash "
                "FROM audit_events ORDER BY event_id"
            ).fetchall()

    def audit_chain_head(self) -> dict:
        """The newest event's id and hash (what receipts and reports pin)."""
        with self._session() as con:
            row = con.execute("SELECT event_id, event_hash FROM audit_events ORDER BY event_id DESC LIMIT 1").fetchone()
        return {"event_id": int(row[0]), "hash": row[1]} if row else {"event_id": 0, "hash": GENESIS}

    def audit_event_hash(self, event_id: int) -> str | None:
        with self._session() as con:
            row = con.execute("SELECT event_hash FROM audit_events WHERE event_id = ?", [int(event_id)]).fetchone()
        return row[0] if row else None

    # -- users (local accounts and roles) --------------------------------------------------------

    def user_count(self) -> int:
        with self._session() as con:
            return int(con.execute("SELECT count(*) FROM users WHERE NOT disabled").fetchone()[0])  # type: ignore[index]

    def get_user(self, username: str) -> dict | None:
        with self._session() as con:
            rows = _fetch_dicts(con, "SELECT * FROM users WHERE username = ?", [username])
        return rows[0] if rows else None

    def list_users(self) -> pd.DataFrame:
        with self._session() as con:
            return con.execute(
                "SELECT username, role, created_at, created_by, disabled, password_hash IS NOT NULL AS has_password "
                "FROM users ORDER BY username"
            ).df()

    def upsert_user(
        self, username: str, role: str, password_hash: str | None, *, actor: str, action: str, details: dict
    ) -> None:
        """Create or change a user (role, password) and write its audit event in one transaction."""
        with self._session() as con:
            exists = con.execute("SELECT 1 FROM users WHERE username = ?", [username]).fetchone()
            if exists:
                con.execute(
                    "UPDATE users SET role = ?, password_hash = coalesce(?, password_hash), disabled = FALSE "
                    "WHERE username = ?",
                    [role, password_hash, username],
                )
            else:
                con.execute(
                    "INSERT INTO users (username, role, password_hash, created_at, created_by) VALUES (?, ?, ?, ?, ?)",
                    [username, role, password_hash, _now(), actor],
                )
            self._log_event(con, actor, action, None, {"user": username, "role": role} | details)

    def disable_user(self, username: str, *, actor: str) -> None:
        with self._session() as con:
            con.execute("UPDATE users SET disabled = TRUE WHERE username = ?", [username])
            self._log_event(con, actor, "user_disabled", None, {"user": username})

    def all_receipts(self) -> list[tuple[str, str, str]]:
        """(run_id, receipt_json, receipt_sha256) of every run with a receipt, oldest first."""
        with self._session() as con:
            return con.execute(
                "SELECT run_id, receipt_json, receipt_sha256 FROM run_models ORDER BY created_at, run_id"
            ).fetchall()

    # -- liveness (heartbeats of executing runs; see liveness.py) ---------------------------------

    def beat(
        self,
        run_id: str,
        *,
        executor: str | None = None,
        pid: int | None = None,
        host: str | None = None,
        stamp: bool = True,
    ) -> None:
        """Stamp the run's heartbeat (now) and record who executes it (the arguments given).
        ``stamp=False`` records the executor only (a worker launched but not started yet)."""
        sets: list[str] = ["heartbeat_at = ?"] if stamp else []
        params: list[Any] = [_now()] if stamp else []
        for col, value in (("executor", executor), ("pid", _opt_int(pid)), ("host", host)):
            if value is not None:
                sets.append(f"{col} = ?")
                params.append(value)
        if not sets:
            return
        with self._session() as con:
            self._require_run(con, run_id)
            con.execute(f"UPDATE runs SET {', '.join(sets)} WHERE run_id = ?", [*params, run_id])

    def fail_if_active(self, run_id: str, error: str, *, actor: str, details: dict) -> bool:
        """Mark the run failed with ``error`` and log ``run_failed``, in one transaction, only if it
        is still queued or running (a run that finished meanwhile keeps its status). Returns
        whether it changed."""
        with self._session() as con:
            row = con.execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchone()
            if row is None or row[0] not in ACTIVE_STATUSES:
                return False
            con.execute(
                "UPDATE runs SET status = 'failed', error = ?, finished_at = ? WHERE run_id = ?",
                [error, _now(), run_id],
            )
            self._log_event(con, actor, "run_failed", run_id, details)
        return True

    def table_counts(self) -> dict[str, int]:
        """Rows per table: what a fault test compares before and after (nothing lost, nothing half-written)."""
        with self._session() as con:
            names = [
                r[0]
                for r in con.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY table_name"
                ).fetchall()
            ]
            return {n: int(con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0]) for n in names}  # type: ignore[index]
