"""The tamper-evident audit log: every event carries the hash of the event before it and its own
hash over a canonical encoding of its fields (id, time, actor, action, run, details as stored,
previous hash). Editing, deleting, inserting or reordering an event breaks the chain at that
event; rewriting the whole tail is caught by the chain heads pinned in signed receipts and reports.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass

GENESIS = "0" * 64  # the "previous hash" of the first event


def _ts(ts) -> str:
    if isinstance(ts, _dt.datetime):
        return ts.replace(tzinfo=None).isoformat(timespec="microseconds")
    return str(ts)


def event_hash(
    event_id: int, ts, actor: str, action: str, run_id: str | None, details_json: str | None, prev: str
) -> str:
    fields = [int(event_id), _ts(ts), str(actor), str(action), run_id, details_json, prev]
    return hashlib.sha256(json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


@dataclass
class ChainReport:
    ok: bool
    length: int
    head: str  # hash of the last event (GENESIS when empty)
    head_id: int | None
    broken_at: int | None = None  # the first event id where the chain fails
    reason: str = ""

    def line(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.length} events, head {self.head} (event {self.head_id})"
        return f"audit chain BROKEN at event {self.broken_at}: {self.reason}"


def verify_rows(rows: list[tuple]) -> ChainReport:
    """``rows``: (event_id, ts, actor, action, run_id, details_json, prev_hash, event_hash) in
    event_id order. Ids must run 1, 2, 3 ... without gaps (a deleted event leaves one)."""
    prev, last_id = GENESIS, 0
    for event_id, ts, actor, action, run_id, details, prev_hash, own in rows:
        if event_id != last_id + 1:
            why = "reordered" if event_id <= last_id else f"event(s) {last_id + 1}..{event_id - 1} deleted"
            return ChainReport(False, last_id, prev, last_id or None, event_id, why)
        if prev_hash != prev:
            return ChainReport(
                False,
                last_id,
                prev,
                last_id or None,
                event_id,
                "its link to the previous event is wrong (an event was removed, inserted or reordered)",
            )
        if own != event_hash(event_id, ts, actor, action, run_id, details, prev):
            return ChainReport(
                False, last_id, prev, last_id or None, event_id, "its content does not match its hash (edited)"
            )
        prev, last_id = own, event_id
    return ChainReport(True, last_id, prev, last_id or None)
