"""The report's sections built from the store's rows: which hierarchy the run used, the selected
concepts, the per-concept collateral tables, example probes, generation pairs and the audit trail."""

from __future__ import annotations

import json
import math
from typing import Callable

from hdsu_core import fmt
from hdsu_core.audit.content import jsonable, records, share_true
from hdsu_core.hierarchy import Hierarchy, load_default

N_EXAMPLE_PROBES = 6
TARGETED, PRESERVED = "targeted", "preserved"  # the two groups of the collateral tables and chart


# ---------------------------------------------------------------------------------------------
# Hierarchy and concept labels
# ---------------------------------------------------------------------------------------------
def resolve_hierarchy(store, run: dict, hierarchy: Hierarchy | None) -> tuple[Hierarchy, str]:
    """(hierarchy, description). Given > the run's stored hierarchy version > the default file."""
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


def concept_label(h: Hierarchy, cid: str | None) -> dict:
    """id, name, path and level of a concept id, also for untagged items and unknown ids."""
    if cid is None or cid == "":
        return {"id": "", "name": "(untagged)", "path": "(untagged)", "level": None, "known": False}
    if cid in h:
        c = h.concept(cid)
        return {"id": cid, "name": c.name, "path": h.path_str(cid), "level": c.level, "known": True}
    return {"id": cid, "name": cid, "path": f"unknown concept id '{cid}'", "level": None, "known": False}


def ancestor_at_level(h: Hierarchy, cid: str | None, level: int) -> str:
    """The ancestor (or self) of ``cid`` at ``level``; concepts above it map to themselves."""
    if not cid:
        return ""
    if cid not in h:
        return cid
    for c in [cid, *h.ancestors(cid)]:
        if h.concept(c).level == level:
            return c
    return cid  # already above that level


# ---------------------------------------------------------------------------------------------
# Collateral tables: accuracy before / after per concept (and per L3 / L2 ancestor)
# ---------------------------------------------------------------------------------------------
def _accuracy_row(h: Hierarchy, cid: str, group: str, correct: dict[str, list]) -> dict:
    lab = concept_label(h, cid)
    ab, aa = share_true(correct["before"]), share_true(correct["after"])
    change = None if ab is None or aa is None else 100 * (aa - ab)
    return {
        "concept_id": cid,
        "name": lab["name"],
        "path": lab["path"],
        "group": group,
        "n": max(len(correct["before"]), len(correct["after"])),
        "acc_before": ab,
        "acc_after": aa,
        "change_points": change,
        "acc_before_s": fmt.REPORT.pct(ab),
        "acc_after_s": fmt.REPORT.pct(aa),
        "change_s": fmt.REPORT.signed(change),
    }


def _accuracy_table(
    h: Hierarchy, rows_by_phase: dict[str, list[dict]], targeted: set[str], key: Callable[[str], str]
) -> list[dict]:
    """Rows grouped by (``key(concept id)``, targeted / preserved); targeted groups first."""
    correct: dict[tuple[str, str], dict[str, list]] = {}
    for phase, rows in rows_by_phase.items():
        for r in rows:
            cid = r.get("concept_id") or ""
            group = TARGETED if (r.get("split") == "forget" or cid in targeted) else PRESERVED
            correct.setdefault((key(cid), group), {"before": [], "after": []})[phase].append(r.get("correct"))
    out = [_accuracy_row(h, cid, group, d) for (cid, group), d in correct.items()]
    out.sort(key=lambda r: (0 if r["group"] == TARGETED else 1, r["path"], r["concept_id"]))
    return out


def collateral_tables(h: Hierarchy, before: list[dict], after: list[dict], targeted: set[str]) -> dict:
    """Per-concept accuracy before/after on trained-on items (forget + retain), plus L3/L2 roll-ups."""

    def members(rows):
        return [r for r in rows if r.get("split") in ("forget", "retain")]

    by_phase = {"before": members(before), "after": members(after)}
    return {
        "concept": _accuracy_table(h, by_phase, targeted, lambda c: c),
        "l3": _accuracy_table(h, by_phase, targeted, lambda c: ancestor_at_level(h, c, 3)),
        "l2": _accuracy_table(h, by_phase, targeted, lambda c: ancestor_at_level(h, c, 2)),
    }


# ---------------------------------------------------------------------------------------------
# Example probes, generations, audit trail
# ---------------------------------------------------------------------------------------------
def _example(h: Hierarchy, before_row: dict, after_row: dict, questions: dict[str, str]) -> dict:
    r, a = before_row, after_row
    return {
        "item_id": str(r["item_id"]),
        "concept_path": concept_label(h, r.get("concept_id"))["path"],
        "question": questions.get(str(r["item_id"])),
        "answer": r.get("answer"),
        "pred_before": r.get("pred"),
        "pred_after": a.get("pred"),
        "correct_before": r.get("correct"),
        "correct_after": a.get("correct"),
        "loss_before": fmt.REPORT.fixed(r.get("loss")),
        "loss_after": fmt.REPORT.fixed(a.get("loss")),
    }


def example_probes(h: Hierarchy, before: list[dict], after: list[dict], questions: dict[str, str]) -> dict:
    """Up to N_EXAMPLE_PROBES forget and retain items, before and after, by item id."""
    a_by = {r["item_id"]: r for r in after}
    out = {}
    for split in ("forget", "retain"):
        rows = sorted((r for r in before if r.get("split") == split), key=lambda r: str(r["item_id"]))
        # Prefer items answered correctly before (they show what changed), then the rest.
        rows = [r for r in rows if r.get("correct")] + [r for r in rows if not r.get("correct")]
        picked = [_example(h, r, a_by.get(r["item_id"], {}), questions) for r in rows[:N_EXAMPLE_PROBES]]
        out[split] = sorted(picked, key=lambda p: p["item_id"])
    return out


def generation_pairs(gens: list[dict]) -> list[dict]:
    """One entry per generation prompt with its output before and after; forget prompts first."""
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


def trail_events(store, run_id: str) -> list[dict]:
    """The run's audit trail, oldest first, without report exports."""
    out = []
    for r in records(store.audit_events(run_id)):
        if r.get("action") == "export_report":
            continue  # keeps the content hash stable across exports (see hdsu_core.audit)
        details = r.get("details")
        out.append(
            {
                "event_id": int(r["event_id"]),
                "ts": fmt.timestamp_utc(r.get("ts")),
                "actor": r.get("actor"),
                "action": r.get("action"),
                "details": "" if not details else json.dumps(jsonable(details), sort_keys=True, ensure_ascii=False),
            }
        )
    out.sort(key=lambda e: e["event_id"])
    return out
