"""Audit commands of the CLI: ``audit report RUN_ID --format html|pdf --out PATH [--db PATH]``.

``register(sub)`` adds the ``audit`` command group to the top-level subparsers of ``cli.py``.
Errors (unknown run, ...) are raised as ``ValueError`` so that ``cli.main`` prints one line and
exits 1.
"""

from __future__ import annotations

from pathlib import Path

from hdsu_core import audit
from hdsu_core.cli_common import Parser
from hdsu_core.hierarchy import Hierarchy
from hdsu_core.paths import atomic_write_bytes


def cmd_audit_report(a) -> int:
    from hdsu_core.store import Store  # lazy: duckdb and pandas slow the start of every command

    store = Store(a.db)
    if store.get_run(a.run_id) is None:  # before any work, and before the output file exists
        raise ValueError(f"unknown run {a.run_id}")
    hierarchy = None
    if a.hierarchy:
        hierarchy = Hierarchy.load(a.hierarchy)
    out = Path(a.out) if a.out else Path(f"{a.run_id}.audit.{a.format}")
    if a.format == "pdf":
        data = audit.build_pdf(store, a.run_id, hierarchy, actor=a.actor)
    else:
        data = audit.build_html(store, a.run_id, hierarchy, actor=a.actor).encode("utf-8")
    atomic_write_bytes(out, data)  # readers never see half a report
    print(out)
    return 0


def register(sub) -> None:
    ap = sub.add_parser("audit", help="audit reports of runs")
    asub = ap.add_subparsers(dest="sub", required=True, parser_class=Parser)
    x = asub.add_parser("report", help="write the HTML or PDF audit report of one run")
    x.add_argument("run_id")
    x.add_argument("--format", choices=("html", "pdf"), default="html")
    x.add_argument("--out", help="output file (default RUN_ID.audit.FORMAT in the current directory)")
    x.add_argument("--db", help="DuckDB file (default: var/hdsu.duckdb or $HDSU_DB)")
    x.add_argument("--hierarchy", help="hierarchy JSON to resolve concept paths (default: the run's)")
    x.add_argument("--actor", default="cli", help="who is exporting (recorded in the audit log)")
    x.set_defaults(fn=cmd_audit_report)
