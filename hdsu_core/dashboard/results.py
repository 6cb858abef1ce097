"""Probe results of a run: the per-question table, the collateral map over the hierarchy, the
membership-inference histograms and the generations side by side."""

from __future__ import annotations

import math
from typing import Iterable

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hdsu_core import fmt
from hdsu_core.dashboard.palette import FORGET, GOOD, PRESERVED
from hdsu_core.hierarchy import Hierarchy, subtree_totals

QUESTION_COLS = [
    "item_id",
    "split",
    "concept_id",
    "correct_before",
    "correct_after",
    "change",
    "loss_before",
    "loss_after",
]


def per_question(probes: pd.DataFrame) -> pd.DataFrame:
    """Before/after side by side, one row per item."""
    if probes is None or probes.empty:
        return pd.DataFrame(columns=QUESTION_COLS)
    keep = ["item_id", "split", "concept_id", "correct", "loss"]
    b = probes[probes["phase"] == "before"][keep]
    a = probes[probes["phase"] == "after"][keep]
    df = b.merge(a, on="item_id", how="outer", suffixes=("_before", "_after"))
    df["split"] = df["split_before"].fillna(df["split_after"])
    df["concept_id"] = df["concept_id_before"].fillna(df["concept_id_after"])
    cb = df["correct_before"].astype("boolean")
    ca = df["correct_after"].astype("boolean")
    change = pd.Series("unchanged", index=df.index, dtype=object)
    change[(cb == True) & (ca == False)] = "lost"  # noqa: E712 - nullable booleans
    change[(cb == False) & (ca == True)] = "gained"  # noqa: E712
    change[cb.isna() | ca.isna()] = "missing"
    df["correct_before"], df["correct_after"], df["change"] = cb, ca, change
    return df[QUESTION_COLS].sort_values(["split", "concept_id", "item_id"]).reset_index(drop=True)


def filter_questions(
    df: pd.DataFrame, concepts: Iterable[str] | None = None, splits: Iterable[str] | None = None, change: str = "all"
) -> pd.DataFrame:
    """``change``: all | changed | unchanged | lost | gained."""
    out = df
    concepts = list(concepts or [])
    if concepts:
        out = out[out["concept_id"].isin(concepts)]
    splits = list(splits or [])
    if splits:
        out = out[out["split"].isin(splits)]
    if change == "changed":
        out = out[out["change"].isin(["lost", "gained"])]
    elif change == "unchanged":
        out = out[out["change"] == "unchanged"]
    elif change in ("lost", "gained"):
        out = out[out["change"] == change]
    return out


def collateral_map(h: Hierarchy, probes: pd.DataFrame, splits: Iterable[str] | None = None) -> pd.DataFrame:
    """Per concept (rolled up the tree): n items, accuracy before and after, change in points.
    ``splits`` limits the items (e.g. ("retain", "holdout") for collateral damage only)."""
    cols = ["concept_id", "name", "level", "n", "acc_before", "acc_after", "change_pts"]
    if probes is None or probes.empty:
        return pd.DataFrame(columns=cols)
    p = probes
    if splits:
        p = p[p["split"].isin(list(splits))]
    direct: dict[str, dict[str, float]] = {}
    for (cid, phase), grp in p.groupby(["concept_id", "phase"], dropna=True):
        if not cid or cid not in h:
            continue
        d = direct.setdefault(cid, {"n_before": 0, "c_before": 0, "n_after": 0, "c_after": 0})
        vals = grp["correct"].astype("boolean").dropna()
        d[f"n_{phase}"] += int(len(vals))
        d[f"c_{phase}"] += int(vals.sum())
    totals = subtree_totals(h, direct, ("n_before", "c_before", "n_after", "c_after"))
    rows = []
    for cid in h.ordered_ids():
        t = totals[cid]
        if not t["n_before"] and not t["n_after"]:
            continue
        ab = t["c_before"] / t["n_before"] if t["n_before"] else float("nan")
        aa = t["c_after"] / t["n_after"] if t["n_after"] else float("nan")
        c = h.concept(cid)
        rows.append(
            {
                "concept_id": cid,
                "name": c.name,
                "level": c.level,
                "n": max(t["n_before"], t["n_after"]),
                "acc_before": ab,
                "acc_after": aa,
                "change_pts": 100 * (aa - ab),
            }
        )
    return pd.DataFrame(rows, columns=cols)


def collateral_figure(h: Hierarchy, cmap: pd.DataFrame, selected: Iterable[str] = (), height: int = 560) -> go.Figure:
    """Sunburst of the concepts that have probe items, coloured by accuracy change (red = lost,
    blue = kept/gained), sized by item count. Selected concepts are outlined."""
    if cmap is None or cmap.empty:
        fig = go.Figure()
        fig.update_layout(
            height=120,
            annotations=[dict(text="no probe results", showarrow=False)],
            xaxis_visible=False,
            yaxis_visible=False,
        )
        return fig
    present = set(cmap["concept_id"])
    ids, labels, parents, vals, colors, custom = [], [], [], [], [], []
    by = cmap.set_index("concept_id")
    sel = set(selected)
    for cid in h.ordered_ids():
        if cid not in present:
            continue
        c = h.concept(cid)
        r = by.loc[cid]
        ids.append(cid)
        labels.append(c.name)
        parents.append(c.parent if c.parent in present else "")
        vals.append(int(r["n"]))
        ch = float(r["change_pts"])
        colors.append(0.0 if math.isnan(ch) else ch)
        custom.append(
            (
                cid,
                fmt.APP.pct(r["acc_before"]),
                fmt.APP.pct(r["acc_after"]),
                fmt.APP.signed(ch),
                "forget target" if cid in sel else "",
            )
        )
    lim = max(10.0, max(abs(v) for v in colors) if colors else 10.0)
    fig = go.Figure(
        go.Sunburst(
            ids=ids,
            labels=labels,
            parents=parents,
            values=vals,
            branchvalues="total",
            customdata=custom,
            marker=dict(
                colors=colors,
                colorscale=[[0, FORGET], [0.5, "#f1f3f5"], [1, PRESERVED]],
                cmin=-lim,
                cmax=lim,
                cmid=0,
                showscale=True,
                colorbar=dict(title="Δ acc (pts)", thickness=12),
                line=dict(
                    color=["#000000" if i in sel else "white" for i in ids],
                    width=[2.5 if i in sel else 0.6 for i in ids],
                ),
            ),
            hovertemplate="<b>%{label}</b><br>%{value} items<br>before %{customdata[1]} → after %{customdata[2]}"
            "<br>change %{customdata[3]} pts<br>%{customdata[4]}<extra></extra>",
            insidetextorientation="radial",
        )
    )
    fig.update_layout(margin=dict(t=10, l=10, r=10, b=10), height=height)
    return fig


def mia_figure(probes: pd.DataFrame) -> go.Figure:
    """Loss histograms: forget (members) vs holdout (non-members), before and after."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Before unlearning", "After unlearning"), shared_yaxes=True)
    colors = {"forget": FORGET, "holdout": PRESERVED, "retain": GOOD}
    if probes is not None and not probes.empty:
        for col, phase in enumerate(("before", "after"), start=1):
            for split in ("forget", "holdout"):
                v = probes[(probes["phase"] == phase) & (probes["split"] == split)]["loss"].dropna()
                fig.add_trace(
                    go.Histogram(
                        x=v.astype(float).tolist(),
                        name=split,
                        legendgroup=split,
                        showlegend=col == 1,
                        marker_color=colors[split],
                        opacity=0.6,
                        histnorm="probability",
                        nbinsx=30,
                    ),
                    row=1,
                    col=col,
                )
    fig.update_layout(
        barmode="overlay", height=330, margin=dict(t=40, l=10, r=10, b=10), legend=dict(orientation="h", y=-0.2)
    )
    fig.update_xaxes(title_text="answer loss (NLL)")
    return fig


def generations_side_by_side(gen: pd.DataFrame) -> pd.DataFrame:
    """One row per generation prompt with its output before and after unlearning."""
    cols = ["prompt_id", "split", "prompt", "before", "after"]
    if gen is None or gen.empty:
        return pd.DataFrame(columns=cols)
    piv = gen.pivot_table(index=["prompt_id"], columns="phase", values="output", aggfunc="first").reset_index()
    prompts = gen.drop_duplicates("prompt_id").set_index("prompt_id")["prompt"]
    piv["prompt"] = piv["prompt_id"].map(prompts)
    piv["split"] = piv["prompt_id"].astype(str).str.split(":").str[0]
    for c in ("before", "after"):
        if c not in piv:
            piv[c] = ""
    return piv[cols]


def preserved_probes(h: Hierarchy, probes: pd.DataFrame, forget_concepts: Iterable[str]) -> pd.DataFrame:
    """The probe rows outside the forget selection (retain + holdout of preserved concepts)."""
    if probes.empty:
        return probes
    targeted = h.expand_selection([c for c in forget_concepts if c in h])
    return probes[~probes["concept_id"].isin(targeted)]
