"""``audit verify``: the hash chain of the audit log, plus every chain head that a receipt pinned
(a rewritten tail recomputes a valid-looking chain, but cannot match the heads in signed receipts
without the installation key), plus each stored receipt against its own sha256."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from hdsu_core.audit_chain import ChainReport, verify_rows
from hdsu_core.security.keys import canonical_json


@dataclass
class IntegrityReport:
    chain: ChainReport
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.problems

    def lines(self) -> list[str]:
        return [self.chain.line(), *self.problems]


def _canonical_sha(doc: dict) -> str:  # = artifacts.receipt.receipt_sha256, which sits layers above
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()


def verify_audit(store) -> IntegrityReport:
    report = IntegrityReport(verify_rows(store.audit_chain_rows()))
    for run_id, receipt_json, sha in store.all_receipts():
        receipt = json.loads(receipt_json)
        if _canonical_sha(receipt) != sha:
            report.problems.append(f"receipt of run {run_id} does not match its sha256 (edited)")
            continue
        head = receipt.get("audit_chain_head")
        if not head or not head.get("event_id"):
            continue
        actual = store.audit_event_hash(head["event_id"])
        if actual != head["hash"]:
            report.problems.append(
                f"event {head['event_id']} is not the one the receipt of run {run_id} pinned "
                f"({'missing' if actual is None else 'hash differs'}): the log was rewritten"
            )
    return report
