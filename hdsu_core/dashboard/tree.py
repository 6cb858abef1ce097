"""The concept tree on screen: sunburst / icicle figures, the click that picks a concept, the forget
selection, concept details and the small tables of the hierarchy editor."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from hdsu_core import fmt
from hdsu_core.dashboard.palette import FORGET, FORGET_LIGHT, LEVEL_COLORS, PRESERVED_LIGHT
from hdsu_core.hierarchy import LEVEL_NAMES, Hierarchy, Violation

LARGE_HIERARCHY = 1500  # above this many concepts the sunburst shows 3 rings at a time


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
    """The selection with ``cid`` added at the end (``add``) or removed."""
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
    """What the side panel shows about one concept."""
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


def violations_table(violations: Iterable[Violation]) -> pd.DataFrame:
    """Every problem of a refused edit or upload, one row each."""
    return pd.DataFrame(
        [{"kind": v.kind, "concepts": ", ".join(v.concept_ids), "problem": v.message} for v in violations],
        columns=["kind", "concepts", "problem"],
    )


def terms_frame(h: Hierarchy, cid: str) -> pd.DataFrame:
    """A concept's terms as the one-column table of the terms editor."""
    return pd.DataFrame({"term": list(h.concept(cid).terms)}, columns=["term"])


def terms_from_frame(df: pd.DataFrame) -> list[str]:
    """The terms back from the edited table (blank rows dropped)."""
    if df is None or "term" not in df:
        return []
    return [str(t).strip() for t in df["term"].tolist() if not fmt.is_missing(t) and str(t).strip()]
