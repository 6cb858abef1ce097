"""Text for numbers, durations and timestamps: the one place the dashboard pages and the audit
report format values.

The two surfaces write a missing value and a percentage differently (the app: ``–`` and
``12.3%``; the report: ``n/a`` and ``12.3 %``), so the number formatters come in two styles,
:data:`APP` and :data:`REPORT`. Every formatter treats None, NaN, pandas NA and non-numbers as
missing.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from typing import Any, Mapping

import pandas as pd

DASH = "–"  # the app's mark for a missing value
NA = "n/a"  # the report's


def is_missing(v: Any) -> bool:
    """None, NaN, NaT or pandas NA (any type; a list or a string is not missing)."""
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def number(v: Any) -> float | None:
    """A finite float, or None (NaN, infinity, None, pandas NA, non-numbers)."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


@dataclass(frozen=True)
class NumberStyle:
    """How one surface writes numbers: its missing mark and what follows a percentage."""

    missing: str
    percent_sign: str

    def pct(self, v: Any, digits: int = 1) -> str:
        """A share as a percentage: 0.123 -> "12.3%" (app) / "12.3 %" (report)."""
        x = number(v)
        return self.missing if x is None else f"{100 * x:.{digits}f}{self.percent_sign}"

    def fixed(self, v: Any, digits: int = 3) -> str:
        """Fixed decimals: 0.5 -> "0.500"."""
        x = number(v)
        return self.missing if x is None else f"{x:.{digits}f}"

    def signed(self, v: Any, digits: int = 1, unit: str = "") -> str:
        """With its sign: -1.6 -> "-1.6", with ``unit=" pts"`` -> "-1.6 pts"."""
        x = number(v)
        return self.missing if x is None else f"{x:+.{digits}f}{unit}"

    def count(self, v: Any) -> str:
        """A whole number with thousands separators: 1193 -> "1,193"."""
        x = number(v)
        return self.missing if x is None else f"{int(round(x)):,}"


APP = NumberStyle(missing=DASH, percent_sign="%")
REPORT = NumberStyle(missing=NA, percent_sign=" %")


def duration(seconds: Any) -> str:
    """Wall time for the app: "42 s", "1 min 15 s", "1 h 02 min"; ``–`` when missing."""
    s = number(seconds)
    if s is None:
        return DASH
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def timestamp_utc(v: Any) -> str | None:
    """UTC timestamp text ("2024-05-01 12:00:00 UTC") from a datetime or pandas Timestamp; naive
    values are taken as UTC; None / NaT -> None; anything else as ``str``."""
    if v is None:
        return None
    try:
        if v is pd.NaT or (not isinstance(v, str) and pd.isna(v)):
            return None
        if isinstance(v, pd.Timestamp):
            v = v.to_pydatetime()
    except (TypeError, ValueError):  # pd.isna of a list or an array: not a timestamp
        pass
    if isinstance(v, _dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        return v.strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(v)


def metric_value(kind: str, v: Any) -> str:
    """A metric in the report's metrics table, by its kind: rate, points, auc, fraction, count,
    seconds (anything else: three decimals)."""
    x = number(v)
    if x is None:
        return NA
    if kind == "rate":
        return f"{x:.3f} ({REPORT.pct(x)})"
    if kind == "points":
        return REPORT.signed(x, 2, " pts")
    if kind == "fraction":
        return f"{x:.6f} ({REPORT.pct(x, 4)})"
    if kind == "count":
        return REPORT.count(x)
    if kind == "seconds":
        return f"{x:.1f} s"
    return REPORT.fixed(x, 3)  # auc and plain floats


def method_label(method: str, settings: Mapping[str, Any] | None = None, lora_r: int | None = None) -> str:
    """The method, with the unlearning LoRA rank and the settings it was benched with when they
    were changed: each is its own entry of bench's table and of the Benchmarks page."""
    parts = ([f"LoRA r{lora_r}"] if lora_r else []) + [f"{k}={v}" for k, v in sorted((settings or {}).items())]
    return f"{method} ({', '.join(parts)})" if parts else method
