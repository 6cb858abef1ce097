"""The concept hierarchy as a node-link graph: which concepts are drawn (collapse below a level,
expand around the focus, the selection and clicked concepts), a layered or radial tree layout, the
parent -> child edges, the cross-links of terms shared with the forget selection, and the click
that picks a concept.

A collapsed concept stands for everything below it (its hover says how many), so a 5,000-concept
hierarchy is drawn as a few dozen nodes until the user opens a branch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import networkx as nx
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from hdsu_core.dashboard.palette import FORGET, FORGET_LIGHT, LEVEL_COLORS, PRESERVED, PRESERVED_LIGHT
from hdsu_core.dashboard.tree import selection_roles
from hdsu_core.hierarchy import LEVEL_NAMES, MAX_LEVEL, Hierarchy
from hdsu_core.tagging import collateral_terms

# Index of the node trace in the graph figure: edges, shared-term links, then nodes (always in
# this order, empty traces included, so a click event's curve number says what was clicked).
NODE_TRACE = 2
GRAPH_LAYOUTS = ("layered", "radial")
READABLE_NODES = 120  # the graph opens with as many levels as fit in this many nodes
LINK_COLOR = "#ae3ec9"  # shared-term cross-links: neither forget red nor preserved blue
NO_DATA = "#dee2e6"  # a concept the chosen run has no probe items for
NODE_SIZES = {1: 22, 2: 16, 3: 11, 4: 8}
LABEL_CHARS = 24
LEAF_PX, MIN_HEIGHT, MAX_HEIGHT = 16, 420, 1400  # layered tree: pixels per leaf line, figure height limits


def default_graph_depth(h: Hierarchy) -> int:
    """Levels shown when the graph opens: as many as fit in ``READABLE_NODES`` nodes (at least one):
    3 of the default hierarchy (40 concepts of 206), 2 of a 5,000-concept one (44)."""
    counts = h.level_counts()
    depth, total = 1, counts.get(1, 0)
    while depth < MAX_LEVEL and total + counts.get(depth + 1, 0) <= READABLE_NODES:
        depth += 1
        total += counts.get(depth, 0)
    return depth


@dataclass
class GraphView:
    """What the graph draws: the visible concepts (depth-first), their positions, and for each
    collapsed one how many concepts it hides."""

    ids: list[str]
    pos: dict[str, tuple[float, float]]
    hidden: dict[str, int] = field(default_factory=dict)
    leaves: set[str] = field(default_factory=set)  # drawn concepts with no drawn child
    layout: str = "layered"

    @property
    def height(self) -> int:
        """Figure height in pixels: a layered tree gives each leaf a line (within limits)."""
        if self.layout == "radial":
            return 640
        return int(min(MAX_HEIGHT, max(MIN_HEIGHT, LEAF_PX * len(self.leaves) + 90)))

    def labels_fit(self) -> bool:
        """Whether every node can carry its name (a layered tree with a line per leaf)."""
        return self.layout != "radial" and (self.height - 90) / max(1, len(self.leaves)) >= LEAF_PX - 2


def visible_concepts(
    h: Hierarchy,
    depth: int,
    *,
    expanded: Iterable[str] = (),
    focus: str | None = None,
    selected: Iterable[str] = (),
    branch: str | None = None,
) -> list[str]:
    """Concepts drawn, depth-first: every concept down to level ``depth``; the children of each
    ``expanded`` concept and of the ``focus``; the selection and the focus themselves with the path
    down to them. ``branch`` keeps only that concept's subtree and its path."""
    keep = {cid for cid, d in h.graph.nodes(data=True) if d["concept"].level <= depth}
    opened = [c for c in [*expanded, *([focus] if focus else [])] if c in h]
    for cid in opened:
        keep.update(h.children(cid))
    for cid in [*opened, *(s for s in selected if s in h)]:
        keep.add(cid)
        keep.update(h.ancestors(cid))
    if branch is not None and branch in h:
        keep &= h.subtree(branch) | set(h.ancestors(branch))
    return [cid for cid in h.ordered_ids() if cid in keep]


def tree_layout(h: Hierarchy, ids: list[str], layout: str = "layered") -> dict[str, tuple[float, float]]:
    """Positions of a tidy tree: visible leaves one under the other in depth-first order, each
    parent centred beside its children, one column per level from the left (or, radial, one ring
    per level from the centre). Levels run left to right so that every label has a line of its own."""
    g = nx.DiGraph(h.graph.subgraph(ids))
    x: dict[str, float] = {}
    next_leaf = 0.0
    for root in (n for n in ids if g.in_degree(n) == 0):
        for n in nx.dfs_postorder_nodes(g, root, sort_neighbors=sorted):
            kids = sorted(g.successors(n))
            if kids:
                x[n] = (x[kids[0]] + x[kids[-1]]) / 2
            else:
                x[n] = next_leaf
                next_leaf += 1
    width = max(next_leaf, 1.0)
    pos = {}
    for n in ids:
        level = h.concept(n).level
        if layout == "radial":
            angle = 2 * math.pi * (x[n] + 0.5) / width
            pos[n] = (level * math.cos(angle), level * math.sin(angle))
        else:
            pos[n] = (float(level), -x[n])
    return pos


def graph_view(h: Hierarchy, ids: list[str], layout: str = "layered") -> GraphView:
    """The layout of ``ids`` and, per collapsed concept, the number of concepts below it not drawn."""
    shown = set(ids)
    hidden, leaves = {}, set()
    for cid in ids:
        if not any(k in shown for k in h.children(cid)):
            leaves.add(cid)
            if h.children(cid):
                hidden[cid] = len(h.descendants(cid))
    return GraphView(ids=ids, pos=tree_layout(h, ids, layout), hidden=hidden, leaves=leaves, layout=layout)


def representative(h: Hierarchy, cid: str, shown: set[str]) -> str | None:
    """The concept itself when drawn, else its nearest drawn ancestor (what a collapsed node stands for)."""
    for c in [cid, *h.ancestors(cid)]:
        if c in shown:
            return c
    return None


def shared_term_links(h: Hierarchy, selected: Iterable[str], shown: set[str]) -> list[dict]:
    """Cross-links between the forget selection and preserved concepts that share a term with it
    (the collateral risk), drawn between the nodes that stand for them: ``a`` (forgotten side),
    ``b`` (preserved side), the shared ``terms``."""
    links: dict[tuple[str, str], list[str]] = {}
    for w in collateral_terms(h, [s for s in selected if s in h]):
        for t in w["targeted"]:
            for p in w["preserved"]:
                a, b = representative(h, t, shown), representative(h, p, shown)
                if a and b and a != b:
                    links.setdefault((a, b), []).append(w["term"])
    return [{"a": a, "b": b, "terms": sorted(set(ts))} for (a, b), ts in links.items()]


def node_colors(
    h: Hierarchy,
    view: GraphView,
    selected: Iterable[str],
    color_by: str,
    change: Mapping[str, float] | None = None,
) -> tuple[list[Any], list[str]]:
    """Marker colours and a role line per node. ``color_by``: "level", "selection" (selected red,
    under a selection orange, a collapsed node hiding part of the selection outlined later) or
    "change" (accuracy change in points of a run, ``change``; grey where it has no items)."""
    roles = selection_roles(h, selected)
    colors: list[Any] = []
    texts = []
    for cid in view.ids:
        role = roles.get(cid, "preserved")
        level = h.concept(cid).level
        if color_by == "change":
            v = (change or {}).get(cid)
            if v is None or math.isnan(v):
                colors.append(NO_DATA)
                texts.append("no probe items in this run")
            else:
                colors.append(float(v))
                texts.append(f"accuracy change {v:+.1f} pts")
        elif color_by == "selection" and role == "selected":
            colors.append(FORGET)
            texts.append("selected to forget")
        elif color_by == "selection" and role == "descendant":
            colors.append(FORGET_LIGHT)
            texts.append("forgotten with a selected ancestor")
        else:
            colors.append(LEVEL_COLORS.get(level, PRESERVED_LIGHT))
            texts.append("preserved" if color_by == "selection" else "")
    return colors, texts


def _edge_trace(h: Hierarchy, view: GraphView) -> go.Scatter:
    xs: list[float | None] = []
    ys: list[float | None] = []
    for cid in view.ids:
        p = h.parent(cid)
        if p in view.pos:
            (x0, y0), (x1, y1) = view.pos[p], view.pos[cid]
            xs += [x0, x1, None]
            ys += [y0, y1, None]
    return go.Scatter(
        x=xs, y=ys, mode="lines", line=dict(color="#adb5bd", width=1), hoverinfo="skip", name="edges", showlegend=False
    )


def _link_trace(view: GraphView, links: list[dict]) -> go.Scatter:
    xs: list[float | None] = []
    ys: list[float | None] = []
    for link in links:
        (x0, y0), (x1, y1) = view.pos[link["a"]], view.pos[link["b"]]
        xs += [x0, x1, None]
        ys += [y0, y1, None]
    return go.Scatter(
        x=xs,
        y=ys,
        mode="lines",
        line=dict(color=LINK_COLOR, width=1.5, dash="dot"),
        hoverinfo="skip",
        name="shares a term with the selection",
        showlegend=bool(links),
    )


def _link_hover_trace(view: GraphView, links: list[dict], names: Mapping[str, str]) -> go.Scatter:
    """Invisible markers half way along each cross-link, carrying the shared terms as hover text."""
    mid = [tuple((p + q) / 2 for p, q in zip(view.pos[k["a"]], view.pos[k["b"]])) for k in links]
    return go.Scatter(
        x=[m[0] for m in mid],
        y=[m[1] for m in mid],
        mode="markers",
        marker=dict(size=10, color=LINK_COLOR, opacity=0.0),
        text=[f"{names[k['a']]} ↔ {names[k['b']]}<br>shared: {', '.join(k['terms'])}" for k in links],
        hovertemplate="%{text}<extra></extra>",
        showlegend=False,
        name="shared terms",
    )


def change_colors(values: list[float], lim: float) -> list[str]:
    """Accuracy changes as colours of the collateral map's scale (red lost, grey none, blue kept)."""
    return [sample_colorscale(CHANGE_SCALE, [min(1.0, max(0.0, (v + lim) / (2 * lim)))])[0] for v in values]


CHANGE_SCALE = [[0, FORGET], [0.5, "#f1f3f5"], [1, PRESERVED]]


def _node_trace(h: Hierarchy, view: GraphView, colors: list[Any], roles: list[str], marks: dict) -> go.Scatter:
    """One marker per drawn concept; ``marks`` holds the focus and the nodes hiding part of the selection."""
    fit = view.labels_fit()
    xs, ys, text, where, sizes, line_c, line_w, custom = [], [], [], [], [], [], [], []
    for cid, role in zip(view.ids, roles):
        c = h.concept(cid)
        n_hidden = view.hidden.get(cid, 0)
        x, y = view.pos[cid]
        xs.append(x)
        ys.append(y)
        labelled = fit or c.level == 1 or cid == marks["focus"] or cid in marks["selected"]
        name = c.name if len(c.name) <= LABEL_CHARS else c.name[: LABEL_CHARS - 1] + "…"  # the hover has it all
        text.append((name + (f" (+{n_hidden})" if n_hidden else "")) if labelled else "")
        where.append("middle right" if cid in view.leaves and view.layout != "radial" else "top center")
        sizes.append(NODE_SIZES.get(c.level, 8) + (min(8.0, 2 * math.log10(1 + n_hidden)) if n_hidden else 0))
        ring = "#212529" if cid == marks["focus"] else FORGET if cid in marks["hides_selection"] else None
        line_c.append(ring or ("#495057" if n_hidden else "white"))
        line_w.append(3.0 if ring else 1.5 if n_hidden else 0.8)
        below = f"{n_hidden} concepts below (collapsed: click to open)" if n_hidden else ""
        custom.append([cid, f"L{c.level} · {LEVEL_NAMES.get(c.level, '')}", role, below, c.name])
    return go.Scatter(
        x=xs,
        y=ys,
        mode="markers+text",
        text=text,
        textposition=where,
        textfont=dict(size=10),
        customdata=custom,
        marker=dict(size=sizes, color=colors, line=dict(color=line_c, width=line_w), opacity=1.0),
        selected=dict(marker=dict(opacity=1.0)),
        unselected=dict(marker=dict(opacity=1.0)),
        hovertemplate="<b>%{customdata[4]}</b><br>%{customdata[1]}<br>id: %{customdata[0]}<br>%{customdata[2]}"
        "<br>%{customdata[3]}<extra></extra>",
        name="concepts",
        showlegend=False,
    )


def hierarchy_graph_figure(
    h: Hierarchy,
    selected: Iterable[str] = (),
    *,
    depth: int | None = None,
    expanded: Iterable[str] = (),
    focus: str | None = None,
    branch: str | None = None,
    layout: str = "layered",
    color_by: str = "selection",
    change: Mapping[str, float] | None = None,
) -> go.Figure:
    """The hierarchy as a node-link tree (``layout`` "layered" or "radial"): edges parent -> child,
    dotted cross-links to preserved concepts sharing a term with the selection, nodes coloured by
    ``color_by`` ("selection", "level" or "change": ``change`` maps concept -> accuracy change in
    points, e.g. a run's collateral map). Collapsed below ``depth`` (see :func:`visible_concepts`)."""
    sel = [s for s in selected if s in h]
    depth = default_graph_depth(h) if depth is None else depth
    ids = visible_concepts(h, depth, expanded=expanded, focus=focus, selected=sel, branch=branch)
    view = graph_view(h, ids, layout)
    shown = set(ids)
    targeted = h.expand_selection(sel)
    colors, roles = node_colors(h, view, sel, color_by, change)
    lim = 10.0
    if color_by == "change":
        numeric = [v for v in colors if isinstance(v, float)]
        lim = max([10.0, *(abs(v) for v in numeric)])
        painted = iter(change_colors(numeric, lim))
        colors = [next(painted) if isinstance(v, float) else v for v in colors]
    marks = {
        "focus": focus,
        "selected": set(sel),
        "hides_selection": {c for c in view.hidden if c not in targeted and h.descendants(c) & targeted},
    }
    links = shared_term_links(h, sel, shown)
    names = {cid: h.concept(cid).name for cid in ids}
    fig = go.Figure(
        [_edge_trace(h, view), _link_trace(view, links), _node_trace(h, view, colors, roles, marks)]
        + [_link_hover_trace(view, links, names)]
    )
    if color_by == "change":
        fig.add_trace(_colorbar_trace(lim))
    _graph_layout(fig, view)
    return fig


def _colorbar_trace(lim: float) -> go.Scatter:
    """An invisible trace that only carries the colour bar of the accuracy change."""
    return go.Scatter(
        x=[None],
        y=[None],
        mode="markers",
        marker=dict(
            colorscale=CHANGE_SCALE,
            cmin=-lim,
            cmax=lim,
            color=[0.0],
            showscale=True,
            colorbar=dict(title="Δ acc (pts)", thickness=12),
        ),
        hoverinfo="skip",
        showlegend=False,
    )


def _graph_layout(fig: go.Figure, view: GraphView) -> None:
    fig.update_layout(
        height=view.height,
        margin=dict(t=30, l=10, r=10, b=10),
        plot_bgcolor="white",
        legend=dict(orientation="h", y=0, yanchor="top"),
        hovermode="closest",
    )
    fig.update_yaxes(visible=False)
    if view.layout == "radial":
        fig.update_xaxes(visible=False)
        fig.update_yaxes(scaleanchor="x", scaleratio=1)
        return
    deepest = max((int(x) for x, _ in view.pos.values()), default=1)
    fig.update_xaxes(  # the level names on top; room on the right for the labels of the deepest column
        side="top",
        tickvals=list(LEVEL_NAMES),
        ticktext=[f"L{lvl}<br>{name}" for lvl, name in LEVEL_NAMES.items()],
        tickangle=0,
        tickfont=dict(size=10),
        showgrid=False,
        zeroline=False,
        range=[0.4, deepest + 1.1],
    )


def graph_concept_from_event(event: Any, h: Hierarchy) -> str | None:
    """The concept clicked in the graph's ``st.plotly_chart(..., on_select="rerun")`` event: a
    point of the node trace, named by its customdata (edges and link hover points are ignored)."""
    if event is None:
        return None
    try:
        sel = event["selection"] if not hasattr(event, "selection") else event.selection
        points = sel["points"] if isinstance(sel, Mapping) else getattr(sel, "points", [])
    except (KeyError, TypeError, AttributeError):
        return None
    for p in points or []:
        if not isinstance(p, Mapping) or p.get("curve_number", NODE_TRACE) != NODE_TRACE:
            continue
        data = p.get("customdata")
        cid = data[0] if isinstance(data, (list, tuple)) and data else data
        if isinstance(cid, str) and cid in h:
            return cid
    return None
