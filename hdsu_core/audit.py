"""HTML / PDF audit reports of one unlearning run.

``report_context`` gathers everything a reviewer needs from the store (who / when / what, the
selected concepts with their hierarchy paths, data counts, the metrics with plain-language
explanations, a per-concept collateral map, example probes, generation probes and the run's audit
trail) as plain, JSON-serialisable values, plus three inline SVG charts made with matplotlib.
``build_html`` renders it with ``templates/audit.html.j2``; ``build_pdf`` converts that HTML with
WeasyPrint. Both record an ``export_report`` audit event.

Integrity: ``sha256`` is the SHA-256 of the canonical JSON of the report *content* (everything
in the context except the generation timestamp, the report id, the hash itself and the charts,
which are drawn from that content). Exports of a report are logged in the audit trail but are not
listed inside reports, so exporting an unchanged run again yields the same content hash and the
same report id (``AR-`` + the first 16 hex digits of the hash); only "generated at" differs.

This module never imports streamlit (nor pyplot: charts use ``matplotlib.figure.Figure``
directly with the SVG canvas, so no global backend is touched).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from hdsu_core import fmt

__all__ = [
    "TARGETS",
    "report_context",
    "content_sha256",
    "render_html",
    "build_html",
    "build_pdf",
]

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATE_NAME = "audit.html.j2"

# Verdict targets (see _verdict).
TARGETS = {
    "forget_margin": 0.05,  # forget acc after <= reference (never-seen / chance) + margin
    "retain_change_points": 2.0,  # |retain acc after - before| <= 2 percentage points
    "mia_auc_center": 0.5,
    "mia_auc_tolerance": 0.05,  # MIA AUC within 0.5 +- 0.05
    "changed_fraction_max": 0.001,  # <= 0.1 % of weights changed
}

N_EXAMPLE_PROBES = 6
MAX_CHART_CONCEPTS = 30

_TARGETED, _PRESERVED = "targeted", "preserved"
_COLORS = {
    "before": "#9aa5b1",
    "after": "#1f5f8b",
    _TARGETED: "#c0392b",
    _PRESERVED: "#2e86c1",
    "forget": "#c0392b",
    "holdout": "#7f8c8d",
}


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------
def _jsonable(obj: Any) -> Any:
    """Plain JSON types only (for hashing and for the template)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [_jsonable(v) for v in obj]
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
            return _jsonable(obj.item())
        except (TypeError, ValueError):
            pass
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return fmt.timestamp_utc(obj) if isinstance(obj, _dt.datetime) else obj.isoformat()
    try:
        import pandas as pd

        if isinstance(obj, pd.Timestamp):
            return fmt.timestamp_utc(obj)
        if pd.isna(obj):
            return None
    except (ImportError, TypeError, ValueError):
        pass
    return str(obj)


def _records(df) -> list[dict]:
    """DataFrame -> list of dicts with plain Python values (NaN/NA -> None)."""
    if df is None or len(df) == 0:
        return []
    out = []
    for rec in df.to_dict("records"):
        clean = {}
        for k, v in rec.items():
            if isinstance(v, (list, dict)):
                clean[k] = v
                continue
            try:
                import pandas as pd

                if v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
                    v = None
            except ImportError:  # pragma: no cover
                pass
            if hasattr(v, "item") and not isinstance(v, (str, bytes)):
                try:
                    v = v.item()
                except (TypeError, ValueError):
                    pass
            clean[k] = v
        out.append(clean)
    return out


def _mean(values: Iterable[Any]) -> float | None:
    vals = [bool(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def content_sha256(ctx: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a report context's content (see module docstring)."""
    content = {k: v for k, v in ctx.items() if k not in ("generated_at", "report_id", "sha256", "charts")}
    text = json.dumps(_jsonable(content), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Hierarchy helpers
# ---------------------------------------------------------------------------------------------
def _resolve_hierarchy(store, run: dict, hierarchy):
    """(hierarchy, description). Given > the run's stored hierarchy version > the default file."""
    from hdsu_core.hierarchy import Hierarchy, load_default

    if hierarchy is not None:
        return hierarchy, f"supplied by caller ({hierarchy.name})"
    version = run.get("hierarchy_version")
    if version is not None and not (isinstance(version, float) and math.isnan(version)):
        try:
            hv = store.get_hierarchy_version(int(version))
            h = Hierarchy.from_dict(hv["hierarchy"])
            return h, f"version {int(version)} from the store ({h.name})"
        except Exception:  # noqa: BLE001 - fall back to the default and say so
            h = load_default()
            return h, f"version {int(version)} not readable; default hierarchy used ({h.name})"
    h = load_default()
    return h, f"default hierarchy file ({h.name})"


def _concept_label(h, cid: str | None) -> dict:
    if cid is None or cid == "":
        return {"id": "", "name": "(untagged)", "path": "(untagged)", "level": None, "known": False}
    if cid in h:
        c = h.concept(cid)
        return {"id": cid, "name": c.name, "path": h.path_str(cid), "level": c.level, "known": True}
    return {"id": cid, "name": cid, "path": f"unknown concept id '{cid}'", "level": None, "known": False}


def _rollup(h, cid: str | None, level: int) -> str:
    """The ancestor (or self) of ``cid`` at ``level``; concepts above it map to themselves."""
    if not cid:
        return ""
    if cid not in h:
        return cid
    chain = [cid, *h.ancestors(cid)]
    for c in chain:
        if h.concept(c).level == level:
            return c
    return cid  # already above that level


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------
_METRIC_ROWS = [
    # key, label, kind, explanation
    (
        "forget_acc_before",
        "Forget accuracy before",
        "rate",
        "Share of the forget-set questions (trained-on items under the selected concepts) the model answered correctly before unlearning.",
    ),
    (
        "forget_acc_after",
        "Forget accuracy after",
        "rate",
        "The same questions after unlearning. Lower means more was forgotten; a model that never learnt them scores about its never-seen / chance level.",
    ),
    ("forgetting_rate", "Forgetting rate (FR)", "rate", "FR = 1 − forget accuracy after."),
    (
        "retain_acc_before",
        "Retain accuracy before",
        "rate",
        "Accuracy on trained-on questions outside the selection, before unlearning.",
    ),
    ("retain_acc_after", "Retain accuracy after", "rate", "The same after unlearning; it should barely move."),
    ("knowledge_preservation", "Knowledge preservation (KP)", "rate", "KP = retain accuracy after."),
    (
        "retain_change_points",
        "Retain change",
        "points",
        "Retain accuracy after − before, in percentage points. Negative values are collateral damage.",
    ),
    (
        "holdout_acc_before",
        "Holdout accuracy before",
        "rate",
        "Accuracy on questions the model was never trained on (both inside and outside the selection).",
    ),
    ("holdout_acc_after", "Holdout accuracy after", "rate", "The same after unlearning."),
    (
        "holdout_forget_acc_before",
        "Never-seen accuracy on selected concepts, before",
        "rate",
        "Accuracy before unlearning on never-trained questions under the selected concepts.",
    ),
    (
        "holdout_forget_acc_after",
        "Never-seen accuracy on selected concepts",
        "rate",
        "Accuracy after unlearning on never-trained questions under the selected concepts: the level a model that never learnt the forget set would reach.",
    ),
    (
        "mia_auc_before",
        "MIA AUC before (loss attack)",
        "auc",
        "How well a membership-inference attacker separates forget items from never-seen ones by their loss, before unlearning (1.0 = perfectly).",
    ),
    (
        "mia_auc",
        "MIA AUC after (loss attack)",
        "auc",
        "The same after unlearning. About 0.5 means an attacker cannot tell forgotten items from never-seen ones; well below 0.5 means the forget items now stand out by being unusually poorly known.",
    ),
    (
        "mia_auc_ci_low",
        "MIA AUC after, 95 % interval low",
        "auc",
        "Bootstrap interval of the loss-attack AUC after unlearning (forget items and never-seen items resampled, seeded). On a small forget set the AUC itself is uncertain by several points: an interval that contains 0.5 means the attacker's result is consistent with chance.",
    ),
    ("mia_auc_ci_high", "MIA AUC after, 95 % interval high", "auc", "Upper end of the same interval."),
    (
        "mia_auc_mink_before",
        "MIA AUC before (Min-K% attack)",
        "auc",
        "A second attack scoring the least likely answer tokens, before unlearning.",
    ),
    (
        "mia_auc_mink",
        "MIA AUC after (Min-K% attack)",
        "auc",
        "A second attack scoring the least likely answer tokens; same reading as above.",
    ),
    (
        "mia_resistance",
        "MIA resistance",
        "rate",
        "1 − 2·|AUC − 0.5|: 1 when the attacker is at chance, 0 when the attacker is perfect.",
    ),
    (
        "changed_fraction",
        "Changed-weight fraction",
        "fraction",
        "Share of model weights whose value differs after unlearning, counted from the actual element-wise weight diff.",
    ),
    ("changed_weights", "Changed weights", "count", "Number of individual weights that changed."),
    ("total_weights", "Total weights", "count", "Floating-point weights in the model."),
    (
        "ppl_before",
        "Perplexity before",
        "float",
        "Perplexity on neutral never-seen text before unlearning (fluency check).",
    ),
    (
        "ppl_after",
        "Perplexity after",
        "float",
        "The same after unlearning; a large rise means the model's language broke.",
    ),
    ("seconds", "Run time", "seconds", "Wall-clock time of the whole run."),
    ("unlearn_seconds", "Unlearning time", "seconds", "Time spent in the unlearning method itself."),
    ("steps", "Unlearning steps", "count", "Optimisation steps the method took."),
]


def _metrics_table(metrics: dict[str, float]) -> list[dict]:
    rows = []
    known = set()
    for key, label, kind, expl in _METRIC_ROWS:
        known.add(key)
        if key not in metrics:
            continue
        v = fmt.number(metrics.get(key))
        rows.append({"key": key, "label": label, "value": fmt.metric_value(kind, v), "raw": v, "explanation": expl})
    for key in sorted(metrics):
        if key in known or key.startswith("n_"):
            continue
        v = fmt.number(metrics.get(key))
        rows.append({"key": key, "label": key, "value": fmt.REPORT.fixed(v, 4), "raw": v, "explanation": ""})
    return rows


def _chance_level(rows: list[dict]) -> float | None:
    ks = [
        len(r["option_logprobs"]) for r in rows if isinstance(r.get("option_logprobs"), list) and r["option_logprobs"]
    ]
    return sum(1.0 / k for k in ks) / len(ks) if ks else None


def _verdict(metrics: dict[str, float], after_rows: list[dict], finished: bool) -> dict:
    T = TARGETS
    checks = []

    def add(name, target, value, ok, note=""):
        checks.append(
            {
                "name": name,
                "target": target,
                "value": value,
                "status": "n/a" if ok is None else ("pass" if ok else "fail"),
                "note": note,
            }
        )

    fa = fmt.number(metrics.get("forget_acc_after"))
    ref = fmt.number(metrics.get("holdout_forget_acc_after"))
    ref_name = "never-seen accuracy on the selected concepts"
    if ref is None:
        ref = _chance_level([r for r in after_rows if r.get("split") == "forget"])
        ref_name = "chance level"
    if ref is None:
        ref, ref_name = 0.25, "assumed chance level (4 options)"
    add(
        "Forgetting",
        f"forget accuracy after ≤ {ref_name} ({fmt.REPORT.pct(ref)}) + {T['forget_margin'] * 100:.0f} pts",
        fmt.REPORT.pct(fa),
        None if fa is None else fa <= ref + T["forget_margin"] + 1e-12,
    )

    rc = fmt.number(metrics.get("retain_change_points"))
    if (
        rc is None
        and fmt.number(metrics.get("retain_acc_after")) is not None
        and fmt.number(metrics.get("retain_acc_before")) is not None
    ):
        rc = 100 * (metrics["retain_acc_after"] - metrics["retain_acc_before"])
    add(
        "Retained knowledge",
        f"retain accuracy change within ±{T['retain_change_points']:.0f} points",
        fmt.REPORT.signed(rc, 2, " pts"),
        None if rc is None else abs(rc) <= T["retain_change_points"] + 1e-9,
    )

    auc = fmt.number(metrics.get("mia_auc"))
    lo, hi = T["mia_auc_center"] - T["mia_auc_tolerance"], T["mia_auc_center"] + T["mia_auc_tolerance"]
    ci_lo, ci_hi = fmt.number(metrics.get("mia_auc_ci_low")), fmt.number(metrics.get("mia_auc_ci_high"))
    measured = (
        fmt.REPORT.fixed(auc)
        if ci_lo is None or ci_hi is None
        else f"{fmt.REPORT.fixed(auc)} (95 % interval {fmt.REPORT.fixed(ci_lo, 2)}–{fmt.REPORT.fixed(ci_hi, 2)})"
    )
    add(
        "Membership privacy",
        f"MIA AUC within {T['mia_auc_center']:.2f} ± {T['mia_auc_tolerance']:.2f}",
        measured,
        None if auc is None else lo - 1e-12 <= auc <= hi + 1e-12,
    )

    cf = fmt.number(metrics.get("changed_fraction"))
    add(
        "Minimal edit",
        f"changed-weight fraction ≤ {100 * T['changed_fraction_max']:.1f} %",
        fmt.REPORT.pct(cf, 4),
        None if cf is None else cf <= T["changed_fraction_max"] + 1e-15,
    )

    states = [c["status"] for c in checks]
    if not finished or all(s == "n/a" for s in states):
        overall, text = "incomplete", "No verdict: the run has not finished or has no metrics."
    elif "fail" in states:
        n = states.count("fail")
        overall, text = "fail", f"{n} of {len(checks)} targets missed."
    elif "n/a" in states:
        overall, text = "incomplete", "Targets met where measured; some metrics are missing."
    else:
        overall, text = "pass", "All targets met."
    return {"overall": overall, "text": text, "checks": checks}


def _concept_tables(h, before: list[dict], after: list[dict], targeted: set[str]) -> dict:
    """Per-concept accuracy before/after on trained-on items (forget + retain), plus L3/L2 roll-ups."""

    def members(rows):
        return [r for r in rows if r.get("split") in ("forget", "retain")]

    b_rows, a_rows = members(before), members(after)

    def table(keyfn):
        acc: dict[tuple[str, str], dict[str, list]] = {}
        for phase, rows in (("before", b_rows), ("after", a_rows)):
            for r in rows:
                cid = r.get("concept_id") or ""
                group = _TARGETED if (r.get("split") == "forget" or cid in targeted) else _PRESERVED
                key = (keyfn(cid), group)
                acc.setdefault(key, {"before": [], "after": []})[phase].append(r.get("correct"))
        out = []
        for (cid, group), d in acc.items():
            lab = _concept_label(h, cid)
            ab, aa = _mean(d["before"]), _mean(d["after"])
            change = None if ab is None or aa is None else 100 * (aa - ab)
            out.append(
                {
                    "concept_id": cid,
                    "name": lab["name"],
                    "path": lab["path"],
                    "group": group,
                    "n": max(len(d["before"]), len(d["after"])),
                    "acc_before": ab,
                    "acc_after": aa,
                    "change_points": change,
                    "acc_before_s": fmt.REPORT.pct(ab),
                    "acc_after_s": fmt.REPORT.pct(aa),
                    "change_s": fmt.REPORT.signed(change),
                }
            )
        out.sort(key=lambda r: (0 if r["group"] == _TARGETED else 1, r["path"], r["concept_id"]))
        return out

    return {
        "concept": table(lambda c: c),
        "l3": table(lambda c: _rollup(h, c, 3)),
        "l2": table(lambda c: _rollup(h, c, 2)),
    }


def _example_probes(h, before: list[dict], after: list[dict], questions: dict[str, str]) -> dict:
    a_by = {r["item_id"]: r for r in after}
    out = {}
    for split in ("forget", "retain"):
        rows = sorted((r for r in before if r.get("split") == split), key=lambda r: str(r["item_id"]))
        # Prefer items answered correctly before (they show what changed), then the rest.
        rows = [r for r in rows if r.get("correct")] + [r for r in rows if not r.get("correct")]
        picked = []
        for r in rows[:N_EXAMPLE_PROBES]:
            a = a_by.get(r["item_id"], {})
            lab = _concept_label(h, r.get("concept_id"))
            picked.append(
                {
                    "item_id": str(r["item_id"]),
                    "concept_path": lab["path"],
                    "question": questions.get(str(r["item_id"])),
                    "answer": r.get("answer"),
                    "pred_before": r.get("pred"),
                    "pred_after": a.get("pred"),
                    "correct_before": r.get("correct"),
                    "correct_after": a.get("correct"),
                    "loss_before": fmt.REPORT.fixed(r.get("loss")),
                    "loss_after": fmt.REPORT.fixed(a.get("loss")),
                }
            )
        picked.sort(key=lambda p: p["item_id"])
        out[split] = picked
    return out


def _generation_pairs(gens: list[dict]) -> list[dict]:
    pairs: dict[str, dict] = {}
    for g in gens:
        pid = str(g["prompt_id"])
        p = pairs.setdefault(
            pid,
            {
                "prompt_id": pid,
                "split": pid.split(":", 1)[0] if ":" in pid else "",
                "prompt": g.get("prompt"),
                "before": None,
                "after": None,
            },
        )
        if g.get("prompt") and not p["prompt"]:
            p["prompt"] = g["prompt"]
        if g.get("phase") in ("before", "after"):
            p[g["phase"]] = g.get("output")
    return [pairs[k] for k in sorted(pairs, key=lambda k: (0 if k.startswith("forget") else 1, k))]


def _events(store, run_id: str) -> list[dict]:
    rows = _records(store.audit_events(run_id))
    out = []
    for r in rows:
        if r.get("action") == "export_report":
            continue  # see module docstring: keeps the content hash stable across exports
        details = r.get("details")
        out.append(
            {
                "event_id": int(r["event_id"]),
                "ts": fmt.timestamp_utc(r.get("ts")),
                "actor": r.get("actor"),
                "action": r.get("action"),
                "details": "" if not details else json.dumps(_jsonable(details), sort_keys=True, ensure_ascii=False),
            }
        )
    out.sort(key=lambda e: e["event_id"])
    return out


# ---------------------------------------------------------------------------------------------
# Charts (inline SVG, deterministic)
# ---------------------------------------------------------------------------------------------
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
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    FigureCanvasSVG(fig)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML declaration and DOCTYPE for inline use
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    return svg.strip()


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

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
        tgt = [r for r in rows if r["group"] == _TARGETED]
        pre = sorted(
            (r for r in rows if r["group"] == _PRESERVED), key=lambda r: (-abs(r["change_points"]), r["concept_id"])
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
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(color=_COLORS[_TARGETED], label="targeted"),
            Patch(color=_COLORS[_PRESERVED], label="preserved"),
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
    import numpy as np

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


def _charts(ctx: dict, after: list[dict]) -> dict[str, str | None]:
    import matplotlib

    with matplotlib.rc_context(_RC):
        return {
            "accuracy": _chart_accuracy(ctx["accuracy"]),
            "collateral": _chart_collateral(ctx["collateral"]["concept"]),
            "mia": _chart_mia(after),
        }


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
STOP_REASONS = {
    "reached_target": "reached the target: the forget questions looked like never-seen ones "
    "(loss-attack AUC against held-back non-members at chance or below, and MCQ "
    "accuracy no better than theirs)",
    "max_steps": "used its whole step budget without reaching the target; the results show how far it got",
    "time_budget": "hit its time budget without reaching the target; the results show how far it got",
    "zero_gradient": "stopped because the update direction vanished",
}


def run_info(run: Mapping[str, Any] | None) -> dict:
    """The method's own account of a run (stop reason, steps, mask, repair), stored in its summary."""
    return dict(((run or {}).get("summary") or {}).get("info") or {})


def procedure_rows(info: Mapping[str, Any]) -> list[dict]:
    """How the unlearning run itself went, in words: why it stopped, how many update steps, how
    many weights it was allowed to change, and what the retain repair restored."""
    if not info:
        return []
    rows = []
    reason = info.get("stopped")
    if reason:
        rows.append({"label": "Stopping", "value": f"The run {STOP_REASONS.get(reason, reason)}."})
    if info.get("steps") is not None:
        rows.append({"label": "Update steps", "value": str(info["steps"])})
    if info.get("mask_size") is not None and info.get("mask_fraction") is not None:
        rows.append(
            {
                "label": "Weights allowed to change",
                "value": f"{int(info['mask_size']):,} ({fmt.REPORT.pct(info['mask_fraction'], 3)} of all weights)",
            }
        )
    if info.get("repair_damaged_before") is not None:
        lost, left = int(info["repair_damaged_before"]), int(info.get("repair_damaged_after") or 0)
        if lost == 0:
            text = "No retained question that the original model answered was lost by the forget updates."
        else:
            text = (
                f"{lost} retained question(s) that the original model answered were lost by the forget "
                f"updates; the retain repair restored {lost - left} of them in {int(info.get('repair_steps') or 0)} "
                f"step(s) on the same weights, re-checking the forgetting after every step."
            )
            if info.get("repair_reverted"):
                text += " Its last step was undone because it weakened the forgetting."
        rows.append({"label": "Retain repair", "value": text})
    if info.get("settle_steps"):
        text = (
            f"The forget questions had been pushed past never-seen ones (itself a sign they were "
            f"removed); {int(info['settle_steps'])} settle step(s) brought them back to the never-seen level."
        )
        if info.get("settle_reverted"):
            text += " Its last step was undone because it let a forget question be answered again."
        rows.append({"label": "Settle", "value": text})
    if info.get("device"):
        rows.append({"label": "Device", "value": str(info["device"])})
    if info.get("dtype"):
        rows.append({"label": "Weight precision", "value": str(info["dtype"])})
    return rows


def report_context(store, run_id: str, hierarchy=None, *, now: _dt.datetime | None = None) -> dict:
    """Everything the report shows, as plain values (see module docstring). Unknown run ->
    ``ValueError("unknown run ...")``; an unfinished run gives a context with ``banner`` set."""
    run = store.get_run(run_id)
    if run is None:
        raise ValueError(f"unknown run {run_id}")
    h, hierarchy_source = _resolve_hierarchy(store, run, hierarchy)
    metrics = {k: v for k, v in store.metrics(run_id).items()}
    metrics_clean = {k: fmt.number(v) for k, v in metrics.items()}
    before = _records(store.probe_results(run_id, "before"))
    after = _records(store.probe_results(run_id, "after"))
    gens = _records(store.generations(run_id))

    status = run.get("status") or "unknown"
    finished = status == "done" and bool(metrics)
    banner = None
    if not finished:
        banner = f"Run not finished (status {status})"
        if run.get("error"):
            banner += f": {str(run['error']).splitlines()[0]}"
        elif status == "done":
            banner += ": no metrics were recorded"
        else:
            banner += "; figures below are partial or missing"

    selected = [str(c) for c in (run.get("forget_concepts") or [])]
    targeted: set[str] = set()
    for c in selected:
        targeted |= h.subtree(c) if c in h else {c}

    config = run.get("config") or {}
    settings = config.get("settings") if isinstance(config, dict) else None

    # Accuracy per split: metrics first, probe rows as the fallback (e.g. partial runs).
    acc = {}
    for part in ("forget", "retain", "holdout"):
        acc[part] = {}
        for ph, rows in (("before", before), ("after", after)):
            v = fmt.number(metrics.get(f"{part}_acc_{ph}"))
            if v is None:
                v = _mean(r.get("correct") for r in rows if r.get("split") == part)
            acc[part][ph] = v

    def count(part):
        v = fmt.number(metrics.get(f"n_{part}"))
        if v is None:
            ids = {r["item_id"] for r in before + after if r.get("split") == part}
            return len(ids) if ids else None
        return int(round(v))

    questions = {}
    for g in gens:
        pid = str(g["prompt_id"])
        if ":" in pid and g.get("prompt"):
            questions.setdefault(pid.split(":", 1)[1], g["prompt"])

    ctx: dict[str, Any] = {
        "run_id": run_id,
        "generated_at": fmt.timestamp_utc(now or _dt.datetime.now(_dt.timezone.utc)),
        "banner": banner,
        "finished": finished,
        "run": {
            "author": run.get("author") or "(unknown)",
            "status": status,
            "created_at": fmt.timestamp_utc(run.get("created_at")),
            "started_at": fmt.timestamp_utc(run.get("started_at")),
            "finished_at": fmt.timestamp_utc(run.get("finished_at")),
            "method": run.get("method"),
            "settings": json.dumps(_jsonable(settings or {}), sort_keys=True, ensure_ascii=False),
            "config": json.dumps(_jsonable(config), sort_keys=True, ensure_ascii=False),
            "model": run.get("model"),
            "model_hash": run.get("model_hash") or "",
            "config_hash": run.get("config_hash") or "",
            "dataset": run.get("dataset"),
            "hierarchy_version": run.get("hierarchy_version"),
            "hierarchy_source": hierarchy_source,
            "error": run.get("error"),
            "message": run.get("message"),
        },
        "selected": [_concept_label(h, c) for c in selected],
        "n_targeted_concepts": len(targeted),
        "counts": {p: count(p) for p in ("forget", "retain", "holdout")},
        "accuracy": acc,
        "metrics": metrics_clean,
        "metrics_table": _metrics_table(metrics),
        "procedure": procedure_rows(run_info(run)),
        "collateral": _concept_tables(h, before, after, targeted),
        "examples": _example_probes(h, before, after, questions),
        "generations": _generation_pairs(gens),
        "events": _events(store, run_id),
        "targets": dict(TARGETS),
    }
    ctx["verdict"] = _verdict(metrics_clean, after, finished)
    ctx["charts"] = _charts(ctx, after)
    ctx["sha256"] = content_sha256(ctx)
    ctx["report_id"] = f"AR-{ctx['sha256'][:16]}"
    return _jsonable_context(ctx)


def _jsonable_context(ctx: dict) -> dict:
    charts = ctx.pop("charts")
    out = _jsonable(ctx)
    out["charts"] = charts
    return out


def _env():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2", "xml"), default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def render_html(ctx: dict) -> str:
    """Render a context from :func:`report_context` (no store access, no audit event)."""
    from markupsafe import Markup

    css_path = TEMPLATE_DIR / "audit.css"
    css = css_path.read_text(encoding="utf-8") if css_path.exists() else ""
    charts = {k: (Markup(v) if v else None) for k, v in ctx["charts"].items()}  # our own SVG
    return _env().get_template(TEMPLATE_NAME).render(ctx=ctx, charts=charts, css=Markup(css))


def build_html(
    store, run_id: str, hierarchy=None, *, actor: str = "system", now: _dt.datetime | None = None, log: bool = True
) -> str:
    """The audit report as a standalone HTML document; logs ``export_report`` (format html)
    unless ``log=False`` (previews)."""
    ctx = report_context(store, run_id, hierarchy, now=now)
    html = render_html(ctx)
    if log:
        store.log_event(
            actor, "export_report", run_id, {"format": "html", "sha256": ctx["sha256"], "report_id": ctx["report_id"]}
        )
    return html


def build_pdf(
    store, run_id: str, hierarchy=None, *, actor: str = "system", now: _dt.datetime | None = None, log: bool = True
) -> bytes:
    """The audit report as PDF bytes (WeasyPrint); the PDF title carries the run id. Logs
    ``export_report`` (format pdf) unless ``log=False``."""
    from weasyprint import HTML

    ctx = report_context(store, run_id, hierarchy, now=now)
    html = render_html(ctx)
    pdf = HTML(string=html, base_url=str(TEMPLATE_DIR)).write_pdf()
    if log:
        store.log_event(
            actor, "export_report", run_id, {"format": "pdf", "sha256": ctx["sha256"], "report_id": ctx["report_id"]}
        )
    return pdf


def record_download(store, run_id: str, file_format: str, actor: str) -> None:
    """Record that a report prepared in the dashboard was downloaded (an ``export_report`` event)."""
    store.log_event(actor, "export_report", run_id, {"format": file_format, "via": "dashboard"})
