"""Audit commands of the CLI.

    audit report RUN_ID --format html|pdf --out PATH   the report, and PATH.sig (its Ed25519 signature)
    audit verify [--db PATH]                           the hash chain of the audit log and the pinned heads
    audit verify-receipt FILE [--public-key KEY]       a receipt (or a report with FILE.sig) offline
    audit public-key [--out FILE]                      the installation's public key (PEM)

``register(sub)`` adds the ``audit`` command group to the top-level subparsers of ``cli.py``.
Errors are raised as ``ValueError`` so that ``cli.main`` prints one line and exits 1; the two
verify commands exit 1 when something does not verify.
"""

from __future__ import annotations

import json
from pathlib import Path

from hdsu_core import audit
from hdsu_core.cli_common import Parser
from hdsu_core.hierarchy import Hierarchy
from hdsu_core.paths import atomic_write_bytes, atomic_write_text
from hdsu_core.security import keys
from hdsu_core.security.roles import cli_actor


def _store(db):
    from hdsu_core.store import Store  # lazy: duckdb and pandas slow the start of every command

    return Store(db)


def cmd_audit_report(a) -> int:
    store = _store(a.db)
    if store.get_run(a.run_id) is None:  # before any work, and before the output file exists
        raise ValueError(f"unknown run {a.run_id}")
    hierarchy = Hierarchy.load(a.hierarchy) if a.hierarchy else None
    out = Path(a.out) if a.out else Path(f"{a.run_id}.audit.{a.format}")
    actor = cli_actor(store, a.actor)
    if a.format == "pdf":
        data = audit.build_pdf(store, a.run_id, hierarchy, actor=actor)
    else:
        data = audit.build_html(store, a.run_id, hierarchy, actor=actor).encode("utf-8")
    atomic_write_bytes(out, data)  # readers never see half a report
    atomic_write_text(Path(f"{out}.sig"), json.dumps(keys.signature_block(data), indent=1))
    print(out)
    return 0


def cmd_audit_verify(a) -> int:
    from hdsu_core.security.integrity import verify_audit  # lazy: the store (duckdb)

    report = verify_audit(_store(a.db))
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


def _public_key(path):
    return keys.load_public_key(path) if path else None


def cmd_audit_verify_receipt(a) -> int:
    path = Path(a.file)
    data = path.read_bytes()
    sig = Path(f"{path}.sig")
    try:
        if sig.exists():  # a report (or any file) with its detached signature
            used = keys.verify_bytes(data, json.loads(sig.read_text()), _public_key(a.public_key))
        else:
            try:
                doc = json.loads(data)
            except ValueError:
                raise keys.SignatureError(f"{path} is not a JSON receipt and has no {sig.name} beside it") from None
            used = keys.verify_document(doc, _public_key(a.public_key))
    except keys.SignatureError as e:
        print(f"NOT VERIFIED: {path}: {e}")
        return 1
    print(f"verified: {path} (signature checked with {used})")
    if a.public_key is None:
        print("note: pass --public-key KEY (the installation's, from the Audit page) to check who signed it")
    return 0


def cmd_audit_public_key(a) -> int:
    pem = keys.public_key_pem()
    if a.out:
        atomic_write_bytes(Path(a.out), pem)
        print(a.out)
    else:
        print(pem.decode().strip())
    return 0


def register(sub) -> None:
    ap = sub.add_parser("audit", help="audit reports, the audit log's hash chain, signatures")
    asub = ap.add_subparsers(dest="sub", required=True, parser_class=Parser)
    x = asub.add_parser("report", help="write the HTML or PDF audit report of one run (and its .sig)")
    x.add_argument("run_id")
    x.add_argument("--format", choices=("html", "pdf"), default="html")
    x.add_argument("--out", help="output file (default RUN_ID.audit.FORMAT in the current directory)")
    x.add_argument("--db", help="DuckDB file (default: var/hdsu.duckdb or $HDSU_DB)")
    x.add_argument("--hierarchy", help="hierarchy JSON to resolve concept paths (default: the run's)")
    x.add_argument("--actor", help="who is exporting (default: the OS user; another name only in demo mode)")
    x.set_defaults(fn=cmd_audit_report)
    x = asub.add_parser("verify", help="check the audit log's hash chain and the heads pinned in receipts")
    x.add_argument("--db", help="DuckDB file (default: var/hdsu.duckdb or $HDSU_DB)")
    x.set_defaults(fn=cmd_audit_verify)
    x = asub.add_parser("verify-receipt", help="verify a receipt's signature (or a report's, with FILE.sig) offline")
    x.add_argument("file")
    x.add_argument("--public-key", help="the installation's public key (PEM); default: the key in the signature")
    x.set_defaults(fn=cmd_audit_verify_receipt)
    x = asub.add_parser("public-key", help="print or write the installation's public key (PEM)")
    x.add_argument("--out")
    x.set_defaults(fn=cmd_audit_public_key)
