"""Several runs at once (the Compare runs page): their headline metrics side by side and their
per-concept accuracy changes overlaid on one axis."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from hdsu_core import fmt
from hdsu_core.dashboard.runs import dataset_label, headline

SIDE_BY_SIDE_ROWS = [
    "method",
    "dataset",
    "forget",
    "forget acc",
    "retain acc",
    "retain change",
    "MIA AUC",
    "changed",
    "time",
]
CHANGE_COLS = ["run", "concept_id", "name", "level", "n", "change_pts"]


def runs_side_by_side(
    runs: Sequence[Mapping[str, Any]], metrics_of: Callable[[str], Mapping[str, float]]
) -> pd.DataFrame:
    """One column per run, one row per headline metric (``metrics_of(run_id)`` reads its metrics)."""
    cols = {}
    for run in runs:
        m = metrics_of(run["run_id"])
        rb, ra = fmt.number(m.get("retain_acc_before")), fmt.number(m.get("retain_acc_after"))
        change = m.get("retain_change_points")
        if change is None and rb is not None and ra is not None:
            change = 100 * (ra - rb)
        fc = run.get("forget_concepts") or []
        cols[run["run_id"]] = {
            "method": str(run.get("method") or ""),
            "dataset": dataset_label(str(run.get("dataset") or "")),
            "forget": ", ".join(fc) if isinstance(fc, list) else str(fc),
            **headline(m),
            "retain change": fmt.APP.signed(change, 1, " pts"),
        }
    return pd.DataFrame(cols, index=SIDE_BY_SIDE_ROWS, columns=list(cols)).rename_axis("metric").reset_index()


def concept_changes(maps: Mapping[str, pd.DataFrame], level: int | None = None) -> pd.DataFrame:
    """The per-concept accuracy change of each run (its collateral map: ``maps[run_id]``) in one
    long table, at one hierarchy ``level`` (None: every level), in each map's concept order."""
    parts = []
    for run_id, cmap in maps.items():
        if cmap is None or cmap.empty:
            continue
        part = cmap if level is None else cmap[cmap["level"] == level]
        parts.append(part.assign(run=run_id)[CHANGE_COLS])
    if not parts:
        return pd.DataFrame(columns=CHANGE_COLS)
    return pd.concat(parts, ignore_index=True)


def concept_changes_figure(
    changes: pd.DataFrame, labels: Mapping[str, str] | None = None, height: int = 460
) -> go.Figure:
    """Accuracy change per concept (points), one line of markers per run on the same axis: where
    the lines part, the runs differ in what they removed and what they kept."""
    fig = go.Figure()
    order = list(dict.fromkeys(changes["concept_id"]))
    names = dict(zip(changes["concept_id"], changes["name"]))
    twice = {n for n in names.values() if list(names.values()).count(n) > 1}
    names = {c: f"{n} ({c})" if n in twice else n for c, n in names.items()}  # one axis category per concept
    for i, (run_id, grp) in enumerate(changes.groupby("run", sort=False)):
        g = grp.set_index("concept_id").reindex([c for c in order if c in set(grp["concept_id"])])
        fig.add_trace(
            go.Scatter(
                x=[names[c] for c in g.index],
                y=g["change_pts"].tolist(),
                mode="lines+markers",
                name=(labels or {}).get(run_id, run_id),
                marker=dict(size=9, symbol=SYMBOLS[i % len(SYMBOLS)]),
                line=dict(width=1.2),
                customdata=list(zip(g.index, g["n"].tolist())),
                hovertemplate="<b>%{x}</b> (%{customdata[0]})<br>%{y:+.1f} pts · %{customdata[1]} items"
                "<extra>%{fullData.name}</extra>",
            )
        )
    fig.add_hline(y=0, line=dict(color="#868e96", width=1))
    fig.update_layout(
        height=height,
        margin=dict(t=20, l=10, r=10, b=10),
        legend=dict(orientation="h", y=-0.35),
        hovermode="closest",
    )
    fig.update_xaxes(categoryorder="array", categoryarray=[names[c] for c in order], tickangle=-40)
    fig.update_yaxes(title_text="accuracy change (pts)", zeroline=False)
    return fig


SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x", "star", "cross", "triangle-down"]
