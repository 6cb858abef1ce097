"""``report_context``: everything a reviewer needs about one run, gathered from the store as plain,
JSON-serialisable values (who / when / what, the selected concepts with their hierarchy paths,
data counts, the metrics with explanations, the verdict, the collateral tables, example probes,
generations and the audit trail), plus the charts, the content hash and the report id."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from hdsu_core import fmt
from hdsu_core.audit.charts import charts
from hdsu_core.audit.content import content_sha256, jsonable, records, share_true
from hdsu_core.audit.metrics_table import metrics_table
from hdsu_core.audit.model_output import model_output
from hdsu_core.audit.procedure import procedure_rows, run_info
from hdsu_core.audit.sections import (
    collateral_tables,
    concept_label,
    example_probes,
    generation_pairs,
    resolve_hierarchy,
    trail_events,
)
from hdsu_core.audit.verdict import TARGETS, verdict
from hdsu_core.hierarchy import Hierarchy
from hdsu_core.store import RunStatus

SPLITS = ("forget", "retain", "holdout")


def _banner(run: dict, status: str, finished: bool) -> str | None:
    """The warning on top of a report of an unfinished run (None when it finished)."""
    if finished:
        return None
    banner = f"Run not finished (status {status})"
    if run.get("error"):
        return banner + f": {str(run['error']).splitlines()[0]}"
    if status == RunStatus.DONE:
        return banner + ": no metrics were recorded"
    return banner + "; figures below are partial or missing"


def _targeted(h: Hierarchy, selected: list[str]) -> set[str]:
    """Every concept under the selection (unknown ids count as themselves)."""
    targeted: set[str] = set()
    for c in selected:
        targeted |= h.subtree(c) if c in h else {c}
    return targeted


def _accuracy(metrics: dict, before: list[dict], after: list[dict]) -> dict[str, dict[str, float | None]]:
    """Accuracy per split and phase: the stored metrics first, the probe rows as the fallback
    (e.g. partial runs)."""
    acc: dict[str, dict[str, float | None]] = {}
    for part in SPLITS:
        acc[part] = {}
        for ph, rows in (("before", before), ("after", after)):
            v = fmt.number(metrics.get(f"{part}_acc_{ph}"))
            if v is None:
                v = share_true(r.get("correct") for r in rows if r.get("split") == part)
            acc[part][ph] = v
    return acc


def _counts(metrics: dict, before: list[dict], after: list[dict]) -> dict[str, int | None]:
    """Items per split: the stored ``n_*`` metrics, else the distinct probed items."""
    out: dict[str, int | None] = {}
    for part in SPLITS:
        v = fmt.number(metrics.get(f"n_{part}"))
        if v is None:
            ids = {r["item_id"] for r in before + after if r.get("split") == part}
            out[part] = len(ids) if ids else None
        else:
            out[part] = int(round(v))
    return out


def _questions(gens: list[dict]) -> dict[str, str]:
    """item id -> question text, from the generation prompts (ids ``split:item``)."""
    questions: dict[str, str] = {}
    for g in gens:
        pid = str(g["prompt_id"])
        if ":" in pid and g.get("prompt"):
            questions.setdefault(pid.split(":", 1)[1], g["prompt"])
    return questions


def _run_section(run: dict, status: str, hierarchy_source: str) -> dict:
    """Who launched the run, when, with which method, settings, model, data and hierarchy."""
    config = run.get("config") or {}
    settings = config.get("settings") if isinstance(config, dict) else None
    return {
        "author": run.get("author") or "(unknown)",
        "status": status,
        "created_at": fmt.timestamp_utc(run.get("created_at")),
        "started_at": fmt.timestamp_utc(run.get("started_at")),
        "finished_at": fmt.timestamp_utc(run.get("finished_at")),
        "method": run.get("method"),
        "settings": json.dumps(jsonable(settings or {}), sort_keys=True, ensure_ascii=False),
        "config": json.dumps(jsonable(config), sort_keys=True, ensure_ascii=False),
        "model": run.get("model"),
        "model_hash": run.get("model_hash") or "",
        "config_hash": run.get("config_hash") or "",
        "dataset": run.get("dataset"),
        "hierarchy_version": run.get("hierarchy_version"),
        "hierarchy_source": hierarchy_source,
        "error": run.get("error"),
        "message": run.get("message"),
    }


def _sealed(ctx: dict, after: list[dict]) -> dict:
    """The context with its charts, content hash and report id; JSON values except the charts."""
    ctx["charts"] = charts(ctx, after)
    ctx["sha256"] = content_sha256(ctx)
    ctx["report_id"] = f"AR-{ctx['sha256'][:16]}"
    drawn = ctx.pop("charts")
    out = jsonable(ctx)
    out["charts"] = drawn
    return out


def report_context(store, run_id: str, hierarchy: Hierarchy | None = None, *, now: _dt.datetime | None = None) -> dict:
    """Everything the report shows, as plain values (see the module docstring). Unknown run ->
    ``ValueError("unknown run ...")``; an unfinished run gives a context with ``banner`` set."""
    run = store.get_run(run_id)
    if run is None:
        raise ValueError(f"unknown run {run_id}")
    h, hierarchy_source = resolve_hierarchy(store, run, hierarchy)
    metrics = dict(store.metrics(run_id))
    metrics_clean = {k: fmt.number(v) for k, v in metrics.items()}
    before = records(store.probe_results(run_id, "before"))
    after = records(store.probe_results(run_id, "after"))
    gens = records(store.generations(run_id))
    status = run.get("status") or "unknown"
    finished = status == RunStatus.DONE and bool(metrics)
    selected = [str(c) for c in (run.get("forget_concepts") or [])]
    targeted = _targeted(h, selected)
    ctx: dict[str, Any] = {
        "run_id": run_id,
        "generated_at": fmt.timestamp_utc(now or _dt.datetime.now(_dt.timezone.utc)),
        "audit_chain_head": store.audit_chain_head(),
        "banner": _banner(run, status, finished),
        "finished": finished,
        "run": _run_section(run, status, hierarchy_source),
        "selected": [concept_label(h, c) for c in selected],
        "n_targeted_concepts": len(targeted),
        "counts": _counts(metrics, before, after),
        "accuracy": _accuracy(metrics, before, after),
        "metrics": metrics_clean,
        "metrics_table": metrics_table(metrics),
        "procedure": procedure_rows(run_info(run)),
        "model_output": model_output(store, run_id),
        "collateral": collateral_tables(h, before, after, targeted),
        "examples": example_probes(h, before, after, _questions(gens)),
        "generations": generation_pairs(gens),
        "events": trail_events(store, run_id),
        "targets": dict(TARGETS),
        "verdict": verdict(metrics_clean, after, finished),
    }
    return _sealed(ctx, after)
