"""hdsu_core.fmt: the one formatter of the dashboard pages and the audit report."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from hdsu_core import fmt

MISSING = [None, float("nan"), float("inf"), pd.NA, pd.NaT, "not a number"]


@pytest.mark.parametrize("v", MISSING)
def test_missing_values_get_each_surface_s_mark(v):
    assert fmt.number(v) is None
    assert fmt.APP.pct(v) == "–" and fmt.REPORT.pct(v) == "n/a"
    assert fmt.APP.fixed(v) == "–" and fmt.REPORT.fixed(v) == "n/a"
    assert fmt.APP.signed(v) == "–" and fmt.REPORT.count(v) == "n/a"
    assert fmt.duration(v) == "–"
    assert fmt.metric_value("rate", v) == "n/a"


def test_is_missing_covers_pandas_and_leaves_other_values():
    assert fmt.is_missing(None) and fmt.is_missing(float("nan")) and fmt.is_missing(pd.NA) and fmt.is_missing(pd.NaT)
    assert not fmt.is_missing("") and not fmt.is_missing(0) and not fmt.is_missing(["a", None])


def test_percent_in_the_app_and_in_the_report():
    assert fmt.APP.pct(0.85) == "85.0%"
    assert fmt.APP.pct(1) == "100.0%"
    assert fmt.REPORT.pct(0.974) == "97.4 %"
    assert fmt.REPORT.pct(0.001, 3) == "0.100 %"


def test_fixed_signed_and_count():
    assert fmt.APP.fixed(0.5) == "0.500"
    assert fmt.REPORT.fixed(0.51234, 2) == "0.51"
    assert fmt.APP.signed(-1.6, 1, " pts") == "-1.6 pts"
    assert fmt.REPORT.signed(2, 2) == "+2.00"
    assert fmt.REPORT.count(1193.4) == "1,193"


@pytest.mark.parametrize(
    "seconds, text",
    [(0, "0 s"), (42.4, "42 s"), (59.4, "59 s"), (75, "1 min 15 s"), (3600, "1 h 00 min"), (3725, "1 h 02 min")],
)
def test_duration(seconds, text):
    assert fmt.duration(seconds) == text


def test_timestamp_utc():
    assert fmt.timestamp_utc(None) is None and fmt.timestamp_utc(pd.NaT) is None
    naive = dt.datetime(2024, 5, 1, 12, 0, 0)
    assert fmt.timestamp_utc(naive) == "2024-05-01 12:00:00 UTC"
    aware = dt.datetime(2024, 5, 1, 14, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert fmt.timestamp_utc(aware) == "2024-05-01 12:00:00 UTC"
    assert fmt.timestamp_utc(pd.Timestamp("2024-05-01 12:00:00")) == "2024-05-01 12:00:00 UTC"
    assert fmt.timestamp_utc("yesterday") == "yesterday"


@pytest.mark.parametrize(
    "kind, v, text",
    [
        ("rate", 0.15, "0.150 (15.0 %)"),
        ("points", -1.6, "-1.60 pts"),
        ("auc", 0.512, "0.512"),
        ("fraction", 0.001, "0.001000 (0.1000 %)"),
        ("count", 1193, "1,193"),
        ("seconds", 42, "42.0 s"),
        ("float", 12.34567, "12.346"),
    ],
)
def test_metric_value_by_kind(kind, v, text):
    assert fmt.metric_value(kind, v) == text
