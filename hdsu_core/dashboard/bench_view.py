"""Benchmark results as the Benchmarks page shows them: the stored bench rows as one flat table,
filters, per-method means over the seeds (standard deviations as error bars), the Pareto front of
forgetting against retained accuracy, and the figures.

A *setting* is one dataset and forget selection: only methods benched on the same setting are
comparable, so every table and figure is per setting. A method benched with changed settings
(``bench --set``) is its own entry ("hdsu (mask_fraction=0.01)")."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Iterable, Mapping

import pandas as pd
import plotly.graph_objects as go

from hdsu_core import fmt
from hdsu_core.dashboard.palette import FORGET, GOOD, PRESERVED
from hdsu_core.dashboard.runs import dataset_label

RETRAIN = "retrain"  # the reference: the same recipe trained without the forget items
PARETO = "Pareto front"
VALUE_COLS = (
    "forget_acc_before",
    "forget_acc_after",
    "retain_acc_before",
    "retain_acc_after",
    "mia_auc",
    "changed_fraction",
    "seconds",
)
FRAME_COLS = ["bench_id", "created_at", "dataset", "setting", "method", "seed", "run_id", *VALUE_COLS]


def setting_label(dataset: str, forget: Iterable[str] | str | None) -> str:
    """ "demo · forget anxiety": one dataset and forget selection."""
    sel = ", ".join(forget) if isinstance(forget, (list, tuple)) else str(forget or "?")
    return f"{dataset_label(str(dataset))} · forget {sel}"


def bench_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """The store's bench rows (one ``metrics`` dict each) as one flat table, newest first."""
    if raw is None or raw.empty:
        return pd.DataFrame(columns=FRAME_COLS)
    rows = []
    for _, r in raw.iterrows():
        m = r["metrics"] if isinstance(r["metrics"], Mapping) else {}
        rows.append(
            {
                "bench_id": r["bench_id"],
                "created_at": pd.Timestamp(r["created_at"]),
                "dataset": r["dataset"],
                "setting": setting_label(r["dataset"], m.get("forget")),
                "method": fmt.method_label(str(r["method"]), m.get("settings"), m.get("lora_r")),
                "seed": int(m["seed"]) if m.get("seed") is not None else 0,
                "run_id": m.get("run_id") or "",
                **{k: fmt.number(m.get(k)) for k in VALUE_COLS},
            }
        )
    return pd.DataFrame(rows, columns=FRAME_COLS).sort_values("created_at", ascending=False, ignore_index=True)


def filter_bench(
    frame: pd.DataFrame,
    *,
    datasets: Iterable[str] | None = None,
    seeds: Iterable[int] | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> pd.DataFrame:
    """The rows of the chosen datasets and seeds, benched between ``since`` and ``until`` (days,
    both included); an empty choice keeps everything."""
    out = frame
    datasets, seeds = list(datasets or []), list(seeds or [])
    if datasets:
        out = out[out["dataset"].isin(datasets)]
    if seeds:
        out = out[out["seed"].isin(seeds)]
    day = out["created_at"].dt.date
    if since is not None:
        out = out[day >= since]
        day = out["created_at"].dt.date
    if until is not None:
        out = out[day <= until]
    return out.reset_index(drop=True)


def _spread(values: pd.Series) -> tuple[float | None, float | None]:
    """Mean and standard deviation over the seeds (deviation 0 for a single seed; None without values)."""
    v = values.dropna().astype(float)
    if v.empty:
        return None, None
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def bench_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per setting and method over the seeds: n seeds, mean and std of every value. A seed benched
    twice counts once, with its latest row."""
    cols = ["setting", "method", "seeds", "reference"] + [f"{k}{s}" for k in VALUE_COLS for s in ("", "_std")]
    if frame is None or frame.empty:
        return pd.DataFrame(columns=cols)
    latest = frame.sort_values("created_at").drop_duplicates(["setting", "method", "seed"], keep="last")
    rows = []
    for (setting, method), grp in latest.groupby(["setting", "method"], sort=False):
        row: dict[str, Any] = {"setting": setting, "method": method, "seeds": len(grp), "reference": method == RETRAIN}
        for k in VALUE_COLS:
            row[k], row[f"{k}_std"] = _spread(grp[k])
        rows.append(row)
    out = pd.DataFrame(rows, columns=cols)
    out["_after_reference"] = ~out["reference"].astype(bool)  # the reference row first, then by name
    return (
        out.sort_values(["setting", "_after_reference", "method"])
        .drop(columns="_after_reference")
        .reset_index(drop=True)
    )


def pareto_front(summary: pd.DataFrame) -> list[str]:
    """The methods (retrain excluded: it is the reference, not a choice) that no other method beats
    on both forget accuracy after (lower is better) and retain accuracy after (higher is better),
    in order of forget accuracy."""
    pts = [
        (r["method"], r["forget_acc_after"], r["retain_acc_after"])
        for _, r in summary.iterrows()
        if not r["reference"] and _known(r["forget_acc_after"]) and _known(r["retain_acc_after"])
    ]
    front = [(m, f, k) for m, f, k in pts if not any((f2 <= f and k2 >= k) and (f2 < f or k2 > k) for _, f2, k2 in pts)]
    return [m for m, _, _ in sorted(front, key=lambda t: (t[1], -t[2], t[0]))]


def _known(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def bench_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The per-setting table: one row per method, means over the seeds (± std when several)."""

    def pm(r, k, f):
        v, s = r[k], r[f"{k}_std"]
        if not _known(v):
            return "–"
        return f(v) + (f" ± {f(s)}" if r["seeds"] > 1 and _known(s) else "")

    def pct(v):
        return fmt.APP.pct(v)

    def fixed(v):
        return fmt.APP.fixed(v)

    rows = [
        {
            "method": r["method"] + (" (reference)" if r["reference"] else ""),
            "seeds": int(r["seeds"]),
            "forget acc after": pm(r, "forget_acc_after", pct),
            "retain acc after": pm(r, "retain_acc_after", pct),
            "MIA AUC": pm(r, "mia_auc", fixed),
            "changed weights": pm(r, "changed_fraction", lambda v: f"{100 * v:.3g} %"),
            "time": pm(r, "seconds", lambda v: f"{v:.0f} s"),
        }
        for _, r in summary.iterrows()
    ]
    return pd.DataFrame(
        rows,
        columns=["method", "seeds", "forget acc after", "retain acc after", "MIA AUC", "changed weights", "time"],
    )


def _errors(summary: pd.DataFrame, key: str, scale: float = 1.0) -> dict:
    std = [(v * scale if _known(v) else 0.0) for v in summary[f"{key}_std"]]
    return dict(type="data", array=std, visible=any(v > 0 for v in std), thickness=1.2)


def _points(
    summary: pd.DataFrame, x: str, y: str, *, x_of=None, name: str, label_at: str = "top center", **marker
) -> go.Scatter:
    xs = summary[x].map(x_of) if x_of else summary[x]
    return go.Scatter(  # plain lists: plotly would send numpy columns as binary blobs
        x=xs.tolist(),
        y=summary[y].tolist(),
        error_x=_errors(summary, x),
        error_y=_errors(summary, y),
        mode="markers+text",
        text=summary["method"].tolist(),
        textposition=label_at,
        textfont=dict(size=10),
        cliponaxis=False,
        marker=dict(size=12, line=dict(color="white", width=1), **marker),
        name=name,
        customdata=summary["seeds"].tolist(),
        hovertemplate="<b>%{text}</b><br>x %{x:.3f} · y %{y:.3f}<br>%{customdata} seed(s)<extra></extra>",
    )


def _split(summary: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    ref = summary["reference"].astype(bool)
    return summary[~ref], summary[ref]


FIGURE_HEIGHT = 380


def _padded(*columns: pd.Series) -> list[float] | None:
    """An axis range around the values, with room for markers, error bars and labels."""
    vals = [float(v) for c in columns for v in c.tolist() if _known(v)]
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    pad = max(0.05, 0.15 * (hi - lo))
    return [lo - pad, hi + pad]


def _frame_layout(fig: go.Figure, height: int) -> None:
    fig.update_layout(
        height=height, margin=dict(t=20, l=10, r=10, b=10), legend=dict(orientation="h", y=-0.28, yanchor="top")
    )


def bench_tradeoff_figure(summary: pd.DataFrame, height: int = FIGURE_HEIGHT) -> go.Figure:
    """Forget accuracy after (x, lower is better) against retain accuracy after (y, higher is
    better), one point per method with the seeds' standard deviation as error bars; the retrain
    reference as a star; the Pareto front as a line."""
    methods, ref = _split(summary)
    fig = go.Figure(_points(methods, "forget_acc_after", "retain_acc_after", name="method", color=PRESERVED))
    if not ref.empty:
        fig.add_trace(
            _points(
                ref,
                "forget_acc_after",
                "retain_acc_after",
                name="retrain (reference)",
                label_at="bottom center",  # methods as good as the reference sit on it, labelled above
                color=GOOD,
                symbol="star",
            )
        )
        fig.data[-1].marker.size = 16
    front = methods.set_index("method").loc[pareto_front(summary)]
    fig.add_trace(
        go.Scatter(
            x=front["forget_acc_after"].tolist(),
            y=front["retain_acc_after"].tolist(),
            mode="lines+markers",
            line=dict(color=FORGET, width=2, dash="dash", shape="hv"),
            marker=dict(symbol="circle-open", size=20, color=FORGET, line=dict(width=2)),
            name=PARETO,
            text=list(front.index),
            hovertemplate="Pareto front: %{text}<extra></extra>",
        )
    )
    _frame_layout(fig, height)
    x, y = summary["forget_acc_after"], summary["retain_acc_after"]
    fig.update_xaxes(
        title_text="forget accuracy after (lower: more forgotten)",
        tickformat=".0%",
        range=_padded(x - summary["forget_acc_after_std"].fillna(0), x + summary["forget_acc_after_std"].fillna(0)),
    )
    fig.update_yaxes(
        title_text="retain accuracy after (higher: more kept)",
        tickformat=".0%",
        range=_padded(y - summary["retain_acc_after_std"].fillna(0), y + summary["retain_acc_after_std"].fillna(0)),
    )
    return fig


def bench_mia_figure(summary: pd.DataFrame, height: int = FIGURE_HEIGHT) -> go.Figure:
    """Membership-inference AUC after unlearning against how much was forgotten (1 − forget
    accuracy after); the band is the target 0.5 ± 0.05 (forget items look never seen)."""
    methods, ref = _split(summary)

    def forgotten(v):
        return None if not _known(v) else 1 - v

    fig = go.Figure(_points(methods, "forget_acc_after", "mia_auc", name="method", color=PRESERVED, x_of=forgotten))
    if not ref.empty:
        fig.add_trace(
            _points(
                ref,
                "forget_acc_after",
                "mia_auc",
                name="retrain (reference)",
                label_at="bottom center",
                color=GOOD,
                symbol="star",
                x_of=forgotten,
            )
        )
    fig.add_hrect(y0=0.45, y1=0.55, fillcolor=GOOD, opacity=0.12, line_width=0)
    fig.add_hline(y=0.5, line=dict(color=GOOD, dash="dot", width=1))
    _frame_layout(fig, height)
    forgetting = _padded(1 - summary["forget_acc_after"])
    fig.update_xaxes(title_text="forgetting (1 − forget accuracy after)", tickformat=".0%", range=forgetting)
    fig.update_yaxes(title_text="MIA AUC after (0.5 = never seen)")
    return fig


def bench_changed_figure(summary: pd.DataFrame, height: int = FIGURE_HEIGHT) -> go.Figure:
    """Fraction of weights each method changed, on a log axis (dense methods change most of the
    model, masked ones a fraction of a percent), with the seeds' standard deviation."""
    known = summary[summary["changed_fraction"].map(_known)]
    colors = [GOOD if r else PRESERVED for r in known["reference"]]
    fig = go.Figure(
        go.Bar(
            x=known["method"].tolist(),
            y=known["changed_fraction"].tolist(),
            error_y=_errors(known, "changed_fraction"),
            marker_color=colors,
            text=[f"{100 * v:.3g} %" for v in known["changed_fraction"]],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="<b>%{x}</b><br>%{y:.4%} of the weights<extra></extra>",
        )
    )
    _frame_layout(fig, height)
    fig.update_layout(showlegend=False)
    fig.update_yaxes(type="log", title_text="changed weights (log)", tickformat=".2~%")
    return fig


def parse_seeds(text: str) -> list[int]:
    """ "0, 1,2" -> [0, 1, 2] (the launch form's seeds field); ValueError on anything else."""
    try:
        seeds = [int(x) for x in str(text).replace(" ", "").split(",") if x]
    except ValueError:
        raise ValueError(f"seeds are comma-separated integers, not {text!r}") from None
    if not seeds:
        raise ValueError("give at least one seed")
    return list(dict.fromkeys(seeds))


def job_line(job: Mapping[str, Any]) -> str:
    """One line per bench job for the page: id, status, datasets, methods, seeds, author."""
    cfg = job.get("config") or {}
    return (
        f"**{job.get('job_id')}** · {job.get('status')} · "
        + ", ".join(dataset_label(d) for d in cfg.get("datasets", []))
        + f" · {len(cfg.get('methods', []))} method(s)"
        + (" + retrain" if cfg.get("retrain") else "")
        + f" · seeds {', '.join(map(str, cfg.get('seeds', [])))} · by {job.get('author') or '?'}"
    )
