"""A report's content as plain JSON values, and its integrity hash.

``content_sha256`` hashes the canonical JSON of everything in a report context except the
generation timestamp, the report id, the hash itself and the charts (which are drawn from that
content), so exporting an unchanged run again yields the same hash.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from typing import Any, Iterable, Mapping

import pandas as pd

from hdsu_core import fmt

# the chain head moves with every event (a report export is one): like the time, it says when, not what
NOT_HASHED = ("generated_at", "audit_chain_head", "report_id", "sha256", "charts")


def jsonable(obj: Any) -> Any:
    """Plain JSON types only (for hashing and for the template); sets are sorted, NaN -> None."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [jsonable(v) for v in obj]
        return (
            sorted(items, key=lambda x: json.dumps(x, sort_keys=True)) if isinstance(obj, (set, frozenset)) else items
        )
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and not isinstance(obj, (bytes, str)):
        try:
            return jsonable(obj.item())
        except (TypeError, ValueError):
            pass
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return fmt.timestamp_utc(obj) if isinstance(obj, _dt.datetime) else obj.isoformat()
    try:
        if isinstance(obj, pd.Timestamp):
            return fmt.timestamp_utc(obj)
        if pd.isna(obj):
            return None
    except (TypeError, ValueError):  # pd.isna of something array-like: keep its text
        pass
    return str(obj)


def _plain(v: Any) -> Any:
    """One DataFrame cell as a plain Python value (NaN / NA / NaT -> None, numpy scalars unboxed)."""
    if isinstance(v, (list, dict)):
        return v
    if v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
        return None
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            return v.item()
        except (TypeError, ValueError):
            pass
    return v


def records(df) -> list[dict]:
    """DataFrame -> list of dicts with plain Python values (NaN/NA -> None)."""
    if df is None or len(df) == 0:
        return []
    return [{k: _plain(v) for k, v in rec.items()} for rec in df.to_dict("records")]


def share_true(values: Iterable[Any]) -> float | None:
    """Share of true values among those that are not None (accuracy over probe rows); None when none."""
    vals = [bool(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def content_sha256(ctx: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a report context's content (see the module docstring)."""
    content = {k: v for k, v in ctx.items() if k not in NOT_HASHED}
    text = json.dumps(jsonable(content), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
