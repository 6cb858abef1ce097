"""The report's charts as inline SVG, deterministic (fixed hash salt, no dates): accuracy before /
after, the collateral map per concept and the membership-inference loss distributions.

Charts use ``matplotlib.figure.Figure`` directly with the SVG canvas, so no global backend (and no
pyplot) is touched. matplotlib is imported only when a report is drawn: the dashboard imports this
package for the run procedure text and should not pay for it.
"""

from __future__ import annotations

import io
import re

import numpy as np

from hdsu_core import fmt
from hdsu_core.audit.sections import PRESERVED, TARGETED

MAX_CHART_CONCEPTS = 30


_COLORS = {
    "before": "#9aa5b1",
    "after": "#1f5f8b",
    TARGETED: "#c0392b",
    PRESERVED: "#2e86c1",
    "forget": "#c0392b",
    "holdout": "#7f8c8d",
}


_RC = {
    "svg.hashsalt": "hdsu-audit",
    "svg.fonttype": "none",  # text stays text: smaller, searchable, font-independent
    "font.family": "DejaVu Sans",
    "font.size": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "path.simplify": True,
}


def _svg(fig) -> str:
    """The figure as inline SVG text, without the XML prologue and metadata (deterministic)."""
    from matplotlib.backends.backend_svg import FigureCanvasSVG  # lazy: matplotlib only when a report is drawn

    FigureCanvasSVG(fig)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML declaration and DOCTYPE for inline use
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    return svg.strip()


def _figure(w: float, h: float):
    from matplotlib.figure import Figure  # lazy: matplotlib only when a report is drawn

    return Figure(figsize=(w, h), dpi=72)


def _chart_accuracy(acc: dict[str, dict[str, float | None]]) -> str | None:
    parts = [p for p in ("forget", "retain", "holdout") if any(acc[p][ph] is not None for ph in ("before", "after"))]
    if not parts:
        return None
    fig = _figure(6.2, 2.6)
    ax = fig.add_subplot(1, 1, 1)
    w = 0.38
    for i, ph in enumerate(("before", "after")):
        xs = [k + (i - 0.5) * w for k in range(len(parts))]
        vals = [100 * (acc[p][ph] or 0.0) for p in parts]
        bars = ax.bar(xs, vals, width=w, color=_COLORS[ph], label=ph)
        for b, p in zip(bars, parts):
            v = acc[p][ph]
            ax.annotate(
                "n/a" if v is None else f"{100 * v:.1f}",
                (b.get_x() + b.get_width() / 2, b.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 1),
                textcoords="offset points",
            )
    ax.set_xticks(range(len(parts)), [p.capitalize() for p in parts])
    ax.set_ylim(0, 112)
    ax.set_ylabel("accuracy (%)")
    ax.legend(frameon=False, ncols=2, loc="upper right", fontsize=7.5)
    ax.set_title("Accuracy before / after unlearning", fontsize=9)
    return _svg(fig)


def _chart_collateral(rows: list[dict]) -> str | None:
    rows = [r for r in rows if r["change_points"] is not None]
    if not rows:
        return None
    if len(rows) > MAX_CHART_CONCEPTS:  # keep every targeted row, then the largest preserved moves
        tgt = [r for r in rows if r["group"] == TARGETED]
        pre = sorted(
            (r for r in rows if r["group"] == PRESERVED), key=lambda r: (-abs(r["change_points"]), r["concept_id"])
        )
        keep = {id(r) for r in (tgt + pre)[:MAX_CHART_CONCEPTS]}
        rows = [r for r in rows if id(r) in keep]
    rows = list(reversed(rows))  # first row on top
    fig = _figure(6.2, 0.9 + 0.22 * len(rows))
    ax = fig.add_subplot(1, 1, 1)
    ys = range(len(rows))
    ax.barh(list(ys), [r["change_points"] for r in rows], color=[_COLORS[r["group"]] for r in rows], height=0.7)
    labels = [(r["name"] if len(r["name"]) <= 38 else r["name"][:36] + "…") for r in rows]
    ax.set_yticks(list(ys), labels, fontsize=7)
    ax.axvline(0, color="#333333", linewidth=0.8)
    ax.set_xlabel("accuracy change (percentage points)")
    from matplotlib.patches import Patch  # lazy: matplotlib only when a report is drawn

    ax.legend(
        handles=[
            Patch(color=_COLORS[TARGETED], label="targeted"),
            Patch(color=_COLORS[PRESERVED], label="preserved"),
        ],
        frameon=False,
        fontsize=7.5,
        loc="lower right",
    )
    lim = max(5.0, max(abs(r["change_points"]) for r in rows) * 1.1)
    ax.set_xlim(-lim, lim)
    ax.set_title("Collateral map: accuracy change per concept", fontsize=9)
    return _svg(fig)


def _chart_mia(after: list[dict]) -> str | None:
    f = [fmt.number(r.get("loss")) for r in after if r.get("split") == "forget"]
    h = [fmt.number(r.get("loss")) for r in after if r.get("split") == "holdout"]
    f, h = [x for x in f if x is not None], [x for x in h if x is not None]
    if not f and not h:
        return None
    allv = f + h
    lo, hi = min(allv), max(allv)
    if hi <= lo:
        hi = lo + 1.0
    bins = np.linspace(lo, hi, 21)
    fig = _figure(6.2, 2.4)
    ax = fig.add_subplot(1, 1, 1)
    if f:
        ax.hist(
            f,
            bins=bins,
            alpha=0.6,
            color=_COLORS["forget"],
            label=f"forget (n={len(f)})",
            weights=np.full(len(f), 1.0 / len(f)),
        )
    if h:
        ax.hist(
            h,
            bins=bins,
            alpha=0.6,
            color=_COLORS["holdout"],
            label=f"never seen / holdout (n={len(h)})",
            weights=np.full(len(h), 1.0 / len(h)),
        )
    ax.set_xlabel("answer loss after unlearning")
    ax.set_ylabel("share of items")
    ax.legend(frameon=False, fontsize=7.5)
    ax.set_title("Membership inference: loss distributions after unlearning", fontsize=9)
    return _svg(fig)


def charts(ctx: dict, after: list[dict]) -> dict[str, str | None]:
    """The report's three charts as inline SVG (None where there is nothing to draw)."""
    import matplotlib  # lazy: matplotlib only when a report is drawn

    with matplotlib.rc_context(_RC):
        return {
            "accuracy": _chart_accuracy(ctx["accuracy"]),
            "collateral": _chart_collateral(ctx["collateral"]["concept"]),
            "mia": _chart_mia(after),
        }
