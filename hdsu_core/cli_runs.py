"""CLI commands ``runs list`` and ``runs reap``: the runs in the database and the recovery of
runs whose process is gone (liveness.py). Neither imports torch, so both answer at once."""

from __future__ import annotations

from hdsu_core.cli_common import Parser, emit


def _store(db):
    from hdsu_core.store import Store  # lazy: duckdb and pandas slow the start of every command

    return Store(db)


def cmd_runs_reap(a) -> int:
    from hdsu_core.liveness import reap  # lazy: duckdb and pandas (through the store)

    changed = reap(_store(a.db), stale_s=a.stale_s)
    if a.json:
        emit(changed, True)
    else:
        for r in changed:
            print(f"{r['run_id']}  failed: {r['reason']}")
        print(f"{len(changed)} run(s) marked failed")
    return 0


def cmd_runs_list(a) -> int:
    runs = _store(a.db).list_runs(limit=a.limit)
    rows = [
        {
            "run_id": r["run_id"],
            "status": r["status"],
            "method": r["method"],
            "forget": r["forget_concepts"],
            "executor": None if r.get("executor") != r.get("executor") else r.get("executor"),
            "reason": None if r.get("error") != r.get("error") else r.get("error"),
        }
        for _, r in runs.iterrows()
    ]
    if a.json:
        emit(rows, True)
    else:
        for r in rows:
            print(
                f"{r['run_id']}  {r['status']:9s} {r['method']:16s} {','.join(r['forget'] or [])}  {r['reason'] or ''}"
            )
    return 0


def register(sub) -> None:
    """Add ``runs list`` and ``runs reap`` to the top-level subparsers of ``cli.py``."""
    rp = sub.add_parser("runs", help="list runs; mark runs whose process is gone as failed")
    rs = rp.add_subparsers(dest="sub", required=True, parser_class=Parser)
    x = rs.add_parser("reap", help="mark active runs without a heartbeat (process gone) as failed")
    x.add_argument("--db", help="DuckDB file (default var/hdsu.duckdb or $HDSU_DB)")
    x.add_argument("--stale-s", type=float, help="seconds without a heartbeat after which a run is failed (default 30)")
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_runs_reap)
    x = rs.add_parser("list", help="the newest runs with status and failure reason")
    x.add_argument("--db", help="DuckDB file (default var/hdsu.duckdb or $HDSU_DB)")
    x.add_argument("--limit", type=int, default=50)
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_runs_list)
