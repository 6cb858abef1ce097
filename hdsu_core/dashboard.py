"""View logic for the Streamlit dashboard: figures, tables, selection helpers, counts.

Pure functions over hdsu_core objects returning plain Python, pandas or plotly objects, so the
pages stay thin and this module is unit-testable. Never imports streamlit; contains no SQL
(everything persistent goes through :class:`hdsu_core.store.Store`).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from hdsu_core import fmt, paths
from hdsu_core.hierarchy import LEVEL_NAMES, Hierarchy, HierarchyError, Violation, diff_summary, subtree_totals
from hdsu_core.tagging import rollup_counts

# ---------------------------------------------------------------------------------------------
# Palette: forget = red/orange, preserved = blue/green, levels = calm blues/teals.
# ---------------------------------------------------------------------------------------------
FORGET = "#d9480f"  # selected concept
FORGET_LIGHT = "#ff922b"  # descendant of a selected concept
PRESERVED = "#1c7ed6"
PRESERVED_LIGHT = "#d0ebff"
GOOD = "#2f9e44"
LEVEL_COLORS = {1: "#0b7285", 2: "#1098ad", 3: "#66d9e8", 4: "#c5f6fa"}
STATUS_ICONS = {
    "queued": "⏳ queued",
    "running": "▶️ running",
    "done": "✅ done",
    "failed": "❌ failed",
    "cancelled": "⏹️ cancelled",
}
LARGE_HIERARCHY = 1500  # above this many concepts the sunburst shows 3 rings at a time


# ---------------------------------------------------------------------------------------------
# Hierarchy: keys, figure arrays, selection
# ---------------------------------------------------------------------------------------------
def hierarchy_key(h: Hierarchy) -> str:
    """Content fingerprint of a hierarchy (cache key for figures and tagging)."""
    return hashlib.sha256(json.dumps(h.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def tree_arrays(h: Hierarchy) -> dict[str, list]:
    """Plain lists for a plotly sunburst / icicle: ids, labels, parents, levels (depth-first)."""
    ids, labels, parents, levels = [], [], [], []
    for cid in h.ordered_ids():
        c = h.concept(cid)
        ids.append(cid)
        labels.append(c.name)
        parents.append(c.parent or "")
        levels.append(c.level)
    return {"ids": ids, "labels": labels, "parents": parents, "levels": levels}


def selection_roles(h: Hierarchy, selected: Iterable[str]) -> dict[str, str]:
    """concept id -> "selected" | "descendant" | "preserved" for the forget selection."""
    sel = [s for s in selected if s in h]
    roles = {cid: "preserved" for cid in h.graph.nodes}
    for s in sel:
        for d in h.descendants(s):
            roles[d] = "descendant"
    for s in sel:
        roles[s] = "selected"
    return roles


def clean_selection(h: Hierarchy, selected: Iterable[str] | None) -> list[str]:
    """Known ids only, in order, without duplicates and without ids already covered by an ancestor."""
    out: list[str] = []
    for s in selected or []:
        if s in h and s not in out:
            out.append(s)
    covered = set()
    for s in out:
        covered |= h.descendants(s)
    return [s for s in out if s not in covered]


def toggle_selection(selected: Sequence[str], cid: str, add: bool) -> list[str]:
    cur = [s for s in selected if s != cid]
    return cur + [cid] if add else cur


def hierarchy_figure(
    h: Hierarchy,
    selected: Iterable[str] = (),
    *,
    color_by: str = "selection",
    values: Mapping[str, float] | None = None,
    kind: str = "sunburst",
    maxdepth: int | None = None,
    height: int = 620,
    arrays: dict[str, list] | None = None,
) -> go.Figure:
    """The hierarchy as a sunburst (or icicle). ``color_by``: "level" or "selection" (selected in
    red, descendants orange, the rest blue by level). ``values`` (e.g. item counts) sizes segments
    when given; otherwise every concept gets equal weight. Built from plain lists for speed."""
    a = arrays or tree_arrays(h)
    roles = selection_roles(h, selected) if color_by == "selection" else {}
    colors = []
    for cid, lvl in zip(a["ids"], a["levels"]):
        r = roles.get(cid)
        if r == "selected":
            colors.append(FORGET)
        elif r == "descendant":
            colors.append(FORGET_LIGHT)
        else:
            colors.append(LEVEL_COLORS.get(lvl, PRESERVED_LIGHT))
    level_names = [f"L{lvl} · {LEVEL_NAMES.get(lvl, '')}" for lvl in a["levels"]]
    role_text = [roles.get(cid, "") for cid in a["ids"]]
    custom = list(zip(a["ids"], level_names, role_text))
    trace_kw: dict[str, Any] = dict(
        ids=a["ids"],
        labels=a["labels"],
        parents=a["parents"],
        customdata=custom,
        marker=dict(colors=colors, line=dict(color="white", width=0.6)),
        hovertemplate="<b>%{label}</b><br>%{customdata[1]}<br>id: %{customdata[0]}<br>%{customdata[2]}<extra></extra>",
        insidetextorientation="radial" if kind == "sunburst" else None,
    )
    if values is not None:
        trace_kw["values"] = [float(values.get(cid, 0)) for cid in a["ids"]]
        trace_kw["branchvalues"] = "total"
    if maxdepth is None and len(a["ids"]) > LARGE_HIERARCHY:
        maxdepth = 3
    if maxdepth:
        trace_kw["maxdepth"] = maxdepth
    if kind == "icicle":
        trace_kw.pop("insidetextorientation")
        trace = go.Icicle(**trace_kw, tiling=dict(orientation="h"))
    else:
        trace = go.Sunburst(**trace_kw)
    fig = go.Figure(trace)
    fig.update_layout(margin=dict(t=10, l=10, r=10, b=10), height=height, uniformtext=dict(minsize=9, mode="hide"))
    return fig


def concept_from_event(event: Any, h: Hierarchy, arrays: dict[str, list] | None = None) -> str | None:
    """The concept clicked in a ``st.plotly_chart(..., on_select="rerun")`` event (sunburst /
    icicle clicks carry ``id``; older payloads carry ``customdata`` or a point index)."""
    if event is None:
        return None
    try:
        sel = event["selection"] if not hasattr(event, "selection") else event.selection
        points = sel["points"] if isinstance(sel, Mapping) else getattr(sel, "points", [])
    except (KeyError, TypeError, AttributeError):
        return None
    for p in points or []:
        if not isinstance(p, Mapping):
            continue
        for key in ("id", "customdata"):
            v = p.get(key)
            if isinstance(v, (list, tuple)) and v:
                v = v[0]
            if isinstance(v, str) and v in h:
                return v
        idx = p.get("point_index", p.get("point_number"))
        if isinstance(idx, int):
            ids = (arrays or tree_arrays(h))["ids"]
            if 0 <= idx < len(ids):
                return ids[idx]
        label = p.get("label")
        if isinstance(label, str):
            for c in h.concepts():
                if c.name == label:
                    return c.id
    return None


def concept_options(h: Hierarchy) -> dict[str, str]:
    """id -> "Name (L3 · id)" for searchable selectboxes, depth-first order."""
    return {c.id: f"{c.name}  ·  L{c.level} · {c.id}" for c in h.concepts()}


def concept_details(h: Hierarchy, cid: str) -> dict:
    c = h.concept(cid)
    return {
        "id": c.id,
        "name": c.name,
        "level": c.level,
        "level_name": LEVEL_NAMES.get(c.level, ""),
        "path": h.path_str(cid),
        "parent": c.parent,
        "children": h.children(cid),
        "n_descendants": len(h.descendants(cid)),
        "terms": list(c.terms),
        "matchers": list(c.matchers),
        "codes": dict(c.codes),
        "description": c.description,
    }


# ---------------------------------------------------------------------------------------------
# Datasets and tagging counts
# ---------------------------------------------------------------------------------------------
def dataset_choices(shared: Path | None = None) -> dict[str, str]:
    """Label -> dataset spec: the embedded demo KB plus the real benchmarks found under SHARED_DATA."""
    shared = Path(shared) if shared is not None else paths.SHARED_DATA
    out = {"Demo knowledge base (embedded)": "demo"}
    found = [
        ("MedMCQA dev", "medmcqa", shared / "medmcqa" / "dev.jsonl"),
        ("MHQA gold", "mhqa", shared / "mhqa" / "mhqa_gold.csv"),
        ("MHQA-B validation", "mhqa_b", shared / "mhqa" / "mhqa_b_val.csv"),
    ]
    for label, kind, p in found:
        if p.is_file():
            out[label] = f"{kind}:{p}"
    return out


def spec_mtime(spec: str) -> float:
    """Modification time of a dataset spec's file (cache key); 0 when unknown."""
    from hdsu_core.datasets import DatasetError, parse_dataset_spec

    try:
        _, p = parse_dataset_spec(spec)
        return p.stat().st_mtime
    except (DatasetError, OSError):
        return 0.0


def tag_counts(tags: Mapping[str, Any]) -> dict[str, int]:
    """concept id -> number of items whose primary tag is that concept."""
    out: dict[str, int] = {}
    for t in tags.values():
        cid = getattr(t, "concept_id", None)
        if cid:
            out[cid] = out.get(cid, 0) + 1
    return out


def concept_item_counts(h: Hierarchy, cid: str, counts_by_dataset: Mapping[str, Mapping[str, int]]) -> pd.DataFrame:
    """Per dataset: items tagged exactly with the concept and items anywhere in its subtree."""
    sub = h.subtree(cid)
    rows = []
    for name, counts in counts_by_dataset.items():
        rows.append(
            {
                "dataset": name,
                "tagged here": int(counts.get(cid, 0)),
                "in subtree": int(sum(v for k, v in counts.items() if k in sub)),
            }
        )
    return pd.DataFrame(rows, columns=["dataset", "tagged here", "in subtree"])


def split_table(h: Hierarchy, split) -> pd.DataFrame:
    """One row per selected concept with forget / retain / holdout counts in its subtree."""
    rolled = rollup_counts(h, dict(split.counts))
    rows = []
    for s in split.selected:
        c = rolled.get(s, {"forget": 0, "retain": 0, "holdout": 0})
        rows.append(
            {
                "concept": h.concept(s).name,
                "id": s,
                "level": h.concept(s).level,
                "forget": c["forget"],
                "retain": c["retain"],
                "holdout": c["holdout"],
            }
        )
    return pd.DataFrame(rows, columns=["concept", "id", "level", "forget", "retain", "holdout"])


def split_totals(split) -> dict[str, int]:
    s = split.summary()
    return {
        "forget": s["forget"],
        "retain": s["retain"],
        "holdout": s["holdout"],
        "holdout_forget": s["holdout_forget"],
        "untagged": s["untagged"],
    }


def collateral_table(h: Hierarchy, warnings: list[dict]) -> pd.DataFrame:
    rows = [
        {
            "term": w["term"],
            "forgotten with": ", ".join(h.concept(c).name for c in w["targeted"]),
            "also used by (preserved)": ", ".join(h.concept(c).name for c in w["preserved"]),
        }
        for w in warnings
    ]
    return pd.DataFrame(rows, columns=["term", "forgotten with", "also used by (preserved)"])


# ---------------------------------------------------------------------------------------------
# Methods and models
# ---------------------------------------------------------------------------------------------
KEY_SETTINGS = (
    "lr",
    "max_steps",
    "mask_fraction",
    "step_norm",
    "beta",
    "retain_weight",
    "concept_weight",
    "time_budget_s",
    "kl_weight",
    "stop_auc",
)


def key_settings(defaults: Mapping[str, Any], limit: int = 6) -> dict[str, Any]:
    """The few numeric settings worth exposing as inputs (preferring well-known names)."""
    numeric = {k: v for k, v in defaults.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    picked = {k: numeric[k] for k in KEY_SETTINGS if k in numeric}
    for k, v in numeric.items():
        if len(picked) >= limit:
            break
        picked.setdefault(k, v)
    return dict(list(picked.items())[:limit])


def demo_model_status() -> dict:
    """Whether the embedded demo model is already built in the model cache (and its stats)."""
    from hdsu_core.training import DEMO_RECIPE

    root = paths.home() / "models"
    best = None
    if root.is_dir():
        for d in sorted(root.glob("demo-*")):
            mp = d / "hdsu_meta.json"
            if not mp.is_file():
                continue
            try:
                meta = json.loads(mp.read_text())
            except (OSError, ValueError):
                continue
            if meta.get("recipe", {}).get("version") == DEMO_RECIPE.get("version"):
                best = (d, meta)
    if best is None:
        return {"built": False, "path": None, "meta": {}, "recipe": dict(DEMO_RECIPE)}
    return {"built": True, "path": str(best[0]), "meta": best[1], "recipe": dict(DEMO_RECIPE)}


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------
def elapsed_s(run: Mapping[str, Any], now=None) -> float | None:
    """Seconds from start (or creation) to finish (or now); store timestamps are naive UTC."""
    import datetime as dt

    start = run.get("started_at")
    if fmt.is_missing(start):
        start = run.get("created_at")
    if fmt.is_missing(start):
        return None
    end = run.get("finished_at")
    if fmt.is_missing(end):
        end = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    start, end = pd.Timestamp(start).to_pydatetime(), pd.Timestamp(end).to_pydatetime()
    return max(0.0, (end - start).total_seconds())


def run_procedure(run: Mapping[str, Any] | None) -> list[dict]:
    """How a finished run went, in words (the same lines as the audit report): why it stopped,
    its update steps, the weight budget and what the retain repair restored."""
    from hdsu_core.audit import procedure_rows, run_info

    return procedure_rows(run_info(run))


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """History table for the Runs page (newest first)."""
    cols = [
        "run",
        "status",
        "method",
        "dataset",
        "forget",
        "author",
        "created",
        "elapsed",
        "phase",
        "progress",
        "reason",
    ]
    if runs is None or runs.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for _, r in runs.iterrows():
        rd = r.to_dict()
        fc = rd.get("forget_concepts") or []
        ds = str(rd.get("dataset") or "")
        rows.append(
            {
                "run": rd["run_id"],
                "status": STATUS_ICONS.get(rd.get("status"), rd.get("status")),
                "method": rd.get("method"),
                "dataset": dataset_label(ds),
                "forget": ", ".join(fc) if isinstance(fc, list) else str(fc),
                "author": rd.get("author"),
                "created": rd.get("created_at"),
                "elapsed": fmt.duration(elapsed_s(rd)),
                "phase": rd.get("phase") or "",
                "progress": float(rd.get("progress") or 0.0),
                "reason": "" if fmt.is_missing(rd.get("error")) else str(rd.get("error")),
            }
        )
    return pd.DataFrame(rows, columns=cols)


def dataset_label(spec: str) -> str:
    if spec in ("", "demo"):
        return "demo" if spec else ""
    kind, _, rest = spec.partition(":")
    return f"{kind}:{Path(rest).name}" if rest else kind


def run_label(run: Mapping[str, Any]) -> str:
    fc = run.get("forget_concepts") or []
    fc = ", ".join(fc) if isinstance(fc, list) else str(fc)
    return f"{run['run_id']} · {run.get('method')} · {fc} · {run.get('status')}"


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
def headline(m: Mapping[str, float]) -> dict[str, str]:
    """Compact headline strings for a run (Overview table)."""

    def arrow(a, b):
        return f"{fmt.APP.pct(m.get(a))} → {fmt.APP.pct(m.get(b))}" if a in m or b in m else "–"

    return {
        "forget acc": arrow("forget_acc_before", "forget_acc_after"),
        "retain acc": arrow("retain_acc_before", "retain_acc_after"),
        "MIA AUC": fmt.APP.fixed(m.get("mia_auc")),
        "changed": fmt.APP.pct(m.get("changed_fraction")),
        "time": fmt.duration(m.get("seconds")),
    }


def metric_cards(m: Mapping[str, float]) -> list[dict]:
    """Cards for the Compare page: label, value, delta (string or None), delta colour, help."""

    def g(k):
        return fmt.number(m.get(k))

    fa, fb = g("forget_acc_after"), g("forget_acc_before")
    ra, rb = g("retain_acc_after"), g("retain_acc_before")
    fr = g("forgetting_rate") if g("forgetting_rate") is not None else (None if fa is None else 1 - fa)
    kp = g("knowledge_preservation") if g("knowledge_preservation") is not None else ra
    rc = g("retain_change_points")
    if rc is None and ra is not None and rb is not None:
        rc = 100 * (ra - rb)
    mia, mia_b = g("mia_auc"), g("mia_auc_before")
    ci_lo, ci_hi = g("mia_auc_ci_low"), g("mia_auc_ci_high")
    ci = "" if ci_lo is None or ci_hi is None else f" 95 % interval after: {ci_lo:.2f}–{ci_hi:.2f}."
    cards = [
        {
            "label": "Forgetting rate (FR)",
            "value": fmt.APP.pct(fr),
            "delta": None if fa is None or fb is None else f"forget acc {fmt.APP.pct(fb)} → {fmt.APP.pct(fa)}",
            "delta_color": "off",
            "help": "1 − accuracy on the forget set after unlearning (higher is better)",
        },
        {
            "label": "Knowledge preserved (KP)",
            "value": fmt.APP.pct(kp),
            "delta": None if rb is None else f"from {fmt.APP.pct(rb)}",
            "delta_color": "off",
            "help": "Accuracy on the retain set after unlearning (higher is better)",
        },
        {
            "label": "Retain change",
            "value": fmt.APP.signed(rc, 1, " pts"),
            "delta": None if rc is None else f"{rc:+.1f}",
            "delta_color": "normal",
            "help": "Change of retain accuracy in percentage points (0 is ideal)",
        },
        {
            "label": "MIA AUC",
            "value": fmt.APP.fixed(mia),
            "delta": None if mia is None or mia_b is None else f"{mia - mia_b:+.3f}",
            "delta_color": "off",
            "help": "Membership-inference AUC on forget vs holdout losses (0.5 = indistinguishable)." + ci,
        },
        {
            "label": "Weights changed",
            "value": fmt.APP.pct(g("changed_fraction")),
            "delta": None,
            "delta_color": "off",
            "help": "Fraction of parameters that changed",
        },
        {
            "label": "Time",
            "value": fmt.duration(g("seconds")),
            "delta": None,
            "delta_color": "off",
            "help": f"Wall time of the whole run (unlearning alone: {fmt.duration(g('unlearn_seconds'))})",
        },
    ]
    return cards


# ---------------------------------------------------------------------------------------------
# Probe results: per-question table, collateral map, MIA histograms, generations
# ---------------------------------------------------------------------------------------------
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
    from plotly.subplots import make_subplots

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


# ---------------------------------------------------------------------------------------------
# Hierarchy editing, versions, import / export
# ---------------------------------------------------------------------------------------------
def load_working(store) -> tuple[Hierarchy, int | None]:
    """Latest stored hierarchy version, or data/hierarchy.json when none is stored yet."""
    from hdsu_core.hierarchy import load_default

    latest = store.latest_hierarchy_version()
    if latest is None:
        return load_default(), None
    return Hierarchy.from_dict(latest["hierarchy"]), int(latest["version_id"])


def base_hierarchy(store, version: int | None) -> Hierarchy:
    from hdsu_core.hierarchy import load_default

    if version is None:
        return load_default()
    return Hierarchy.from_dict(store.get_hierarchy_version(version)["hierarchy"])


def save_hierarchy(store, working: Hierarchy, base_version: int | None, author: str, message: str) -> dict:
    """Optimistic concurrency: save a new version only if nobody saved since ``base_version``.
    Returns {"ok", "version", "diff", "summary", "error"}; logs an audit event on success."""
    latest = store.latest_hierarchy_version()
    latest_id = None if latest is None else int(latest["version_id"])
    if latest_id != base_version:
        return {
            "ok": False,
            "version": latest_id,
            "diff": None,
            "summary": "",
            "error": f"The hierarchy changed since you loaded it (you started from "
            f"{'the default file' if base_version is None else f'version {base_version}'}, "
            f"latest is version {latest_id} by {latest['author'] if latest else '?'}). "
            f"Reload to get the latest version, then redo your edit.",
        }
    base = base_hierarchy(store, base_version)
    diff = base.diff(working)
    summary = diff_summary(diff)
    if summary == "no changes" and base_version is not None:
        return {
            "ok": False,
            "version": latest_id,
            "diff": diff,
            "summary": summary,
            "error": "Nothing to save: no changes.",
        }
    vid = store.save_hierarchy_version(
        working.to_dict(), author=author or "anonymous", message=message or summary, diff=diff
    )
    store.log_event(
        author or "anonymous", "save_hierarchy", None, {"version": vid, "message": message, "summary": summary}
    )
    return {"ok": True, "version": vid, "diff": diff, "summary": summary, "error": None}


def parse_hierarchy_json(data: bytes | str) -> tuple[Hierarchy | None, list[Violation]]:
    """Validate an uploaded hierarchy document; returns (hierarchy, []) or (None, every violation)."""
    try:
        doc = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, [Violation("bad_format", (), f"not valid JSON: {e}")]
    try:
        return Hierarchy.from_dict(doc), []
    except HierarchyError as e:
        return None, e.violations


def hierarchy_json(h: Hierarchy) -> str:
    return json.dumps(h.to_dict(), indent=1, ensure_ascii=False) + "\n"


def violations_table(violations: Iterable[Violation]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"kind": v.kind, "concepts": ", ".join(v.concept_ids), "problem": v.message} for v in violations],
        columns=["kind", "concepts", "problem"],
    )


def merge_branch(h: Hierarchy, branch: Hierarchy, mode: str = "add") -> Hierarchy:
    """``add``: graft the imported branch into a copy of ``h`` (concepts already present, e.g. a
    shared ICD-10 chapter, are kept as they are); ``replace``: the branch replaces its existing
    counterpart (same ids are overwritten, the old subtree under the imported roots is removed).
    Raises HierarchyError with every violation."""
    if mode not in ("add", "replace"):
        raise HierarchyError(f"unknown import mode {mode!r}")
    data = h.to_dict()
    concepts = data["concepts"]
    new_ids = {c.id for c in branch.concepts()}
    if mode == "replace":
        drop = set()
        for r in branch.roots():
            if r in h:
                drop |= h.subtree(r)
        drop |= new_ids
        concepts = [c for c in concepts if c["id"] not in drop]
        concepts += [c.to_dict() for c in branch.concepts()]
    else:
        have = {c["id"] for c in concepts}
        concepts += [c.to_dict() for c in branch.concepts() if c.id not in have]
    data["concepts"] = concepts
    return Hierarchy.from_dict(data)


def new_concept_id(h: Hierarchy, name: str) -> str:
    from hdsu_core.hierarchy import slugify

    base = slugify(name)
    cid, i = base, 2
    while cid in h:
        cid, i = f"{base}_{i}", i + 1
    return cid


def terms_frame(h: Hierarchy, cid: str) -> pd.DataFrame:
    return pd.DataFrame({"term": list(h.concept(cid).terms)}, columns=["term"])


def terms_from_frame(df: pd.DataFrame) -> list[str]:
    if df is None or "term" not in df:
        return []
    return [str(t).strip() for t in df["term"].tolist() if not fmt.is_missing(t) and str(t).strip()]


def synthetic_hierarchy(n: int = 5000, fanout: tuple[int, int, int] = (10, 10, 12)) -> Hierarchy:
    """A valid four-level hierarchy of about ``n`` concepts (for performance tests)."""
    concepts = []
    n1 = max(1, round(n / (1 + fanout[0] * (1 + fanout[1] * (1 + fanout[2])))))
    count = 0
    for a in range(n1):
        r = f"l1_{a}"
        concepts.append({"id": r, "name": f"Root {a}", "level": 1, "parent": None, "terms": [f"root{a}"]})
        count += 1
        for b in range(fanout[0]):
            m = f"{r}.{b}"
            concepts.append({"id": m, "name": f"Domain {a}.{b}", "level": 2, "parent": r, "terms": [f"dom{a}x{b}"]})
            count += 1
            for c in range(fanout[1]):
                s = f"{m}.{c}"
                concepts.append(
                    {"id": s, "name": f"Topic {a}.{b}.{c}", "level": 3, "parent": m, "terms": [f"topic{a}x{b}x{c}"]}
                )
                count += 1
                for d in range(fanout[2]):
                    if count >= n:
                        break
                    concepts.append(
                        {
                            "id": f"{s}.{d}",
                            "name": f"Detail {a}.{b}.{c}.{d}",
                            "level": 4,
                            "parent": s,
                            "terms": [f"detail{a}x{b}x{c}x{d}"],
                        }
                    )
                    count += 1
    return Hierarchy.from_dict({"format": "hdsu-hierarchy/1", "name": "synthetic", "concepts": concepts})


def device_options() -> dict[str, str]:
    """Devices a run can be launched on, value -> label: auto, the CPU and every CUDA GPU torch
    sees (none on a CPU-only machine, so the form never offers a device that is not there)."""
    import torch

    out = {
        "auto": "auto (GPU if visible, else CPU)" if torch.cuda.is_available() else "auto (CPU: no GPU visible)",
        "cpu": "CPU",
    }
    for i in range(torch.cuda.device_count()):
        out[f"cuda:{i}"] = f"cuda:{i} ({torch.cuda.get_device_name(i)})"
    return out


DTYPE_OPTIONS = {"float32": "float32", "bfloat16": "bfloat16 (half memory)"}
