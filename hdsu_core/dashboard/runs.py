"""Runs as the pages show them: the history table, labels, elapsed time, how a run went, the
headline and the metric cards, and the method settings offered in the launch form."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd

from hdsu_core import fmt
from hdsu_core.audit import procedure_rows, run_info
from hdsu_core.dashboard.palette import STATUS_ICONS
from hdsu_core.store import RunStatus

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


DTYPE_OPTIONS = {"float32": "float32", "bfloat16": "bfloat16 (half memory)"}  # weight precision: value -> label


def injection_recipe(lora_r: int | None, dp_epsilon: float | None) -> dict[str, Any]:
    """The recipe keys of the Unlearn page's injection inputs (0 = off), as ``--inject-lora`` /
    ``--inject-dp-epsilon`` give them: DP's delta and clip at the CLI's defaults. A DP budget
    without a rank is passed on, so the launch is refused with the engine's own message."""
    out: dict[str, Any] = {}
    if lora_r:
        out["lora_r"] = int(lora_r)
    if dp_epsilon:
        out.update(dp_epsilon=float(dp_epsilon), dp_delta=1e-5, dp_clip=1.0)
    return out


def elapsed_s(run: Mapping[str, Any], now=None) -> float | None:
    """Seconds from start (or creation) to finish (or now); store timestamps are naive UTC."""
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
    """A dataset spec in short: "demo", "medmcqa:dev.jsonl"."""
    if spec in ("", "demo"):
        return "demo" if spec else ""
    kind, _, rest = spec.partition(":")
    return f"{kind}:{Path(rest).name}" if rest else kind


def run_label(run: Mapping[str, Any]) -> str:
    """One line per run for the run pickers: id · method · forget concepts · status."""
    fc = run.get("forget_concepts") or []
    fc = ", ".join(fc) if isinstance(fc, list) else str(fc)
    return f"{run['run_id']} · {run.get('method')} · {fc} · {run.get('status')}"


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


def latest_runs_table(runs: pd.DataFrame, metrics_of: Callable[[str], Mapping[str, float]]) -> pd.DataFrame:
    """The Overview's table: one row per run with its status, method, forget concepts and, for a
    finished run, the headline numbers (``metrics_of(run_id)`` reads its metrics)."""
    rows = []
    for _, r in runs.iterrows():
        m = metrics_of(r["run_id"]) if r["status"] == RunStatus.DONE else {}
        fc = r["forget_concepts"] or []
        rows.append(
            {
                "run": r["run_id"],
                "status": STATUS_ICONS.get(r["status"], r["status"]),
                "method": r["method"],
                "forget": ", ".join(fc) if isinstance(fc, list) else fc,
                **headline(m),
            }
        )
    return pd.DataFrame(rows)


def run_time_estimate(runs: pd.DataFrame, *, model: str, dataset: str, method: str | None = None) -> dict | None:
    """What a run will take, from the finished runs of the same model on the same dataset: the
    median wall time (start to finish) of those of the same method, or of all of them when that
    method has not run there yet. ``{"seconds", "n", "method"}`` (method None: all methods), or
    None when there is no such run."""
    if runs is None or runs.empty:
        return None
    done = runs[(runs["status"] == RunStatus.DONE) & (runs["model"] == model) & (runs["dataset"] == dataset)]
    same = done[done["method"] == method] if method else done.iloc[0:0]
    pool, basis = (same, method) if not same.empty else (done, None)
    seconds = sorted(s for s in (elapsed_s(r.to_dict()) for _, r in pool.iterrows()) if s is not None)
    if not seconds:
        return None
    mid = len(seconds) // 2
    median = seconds[mid] if len(seconds) % 2 else (seconds[mid - 1] + seconds[mid]) / 2
    return {"seconds": median, "n": len(seconds), "method": basis}


def run_time_estimate_text(estimate: Mapping[str, Any] | None) -> str:
    """The estimate in one line for the launch form."""
    if not estimate:
        return "no estimate yet: no finished run of this model on this dataset"
    n = estimate["n"]
    which = (f"{estimate['method']} " if estimate["method"] else "") + ("run" if n == 1 else "runs")
    basis = f"median of {n} finished {which}" if n > 1 else f"from 1 finished {which}"
    anyway = "" if estimate["method"] else ", any method"
    return f"about {fmt.duration(estimate['seconds'])} ({basis}{anyway} of this model on this dataset)"


def quick_estimate_text(estimate: Mapping[str, Any]) -> str:
    """The quick-timing estimate (``run_estimate.quick_estimate``) in one line for the launch form."""
    return (
        f"about {fmt.duration(estimate['seconds'])} (estimate from a timed step: one forward + backward of "
        f"{estimate['timed_batch']} demo questions (up to {estimate['seq_len']} tokens) took "
        f"{estimate['step_seconds']:.2f} s on "
        f"{estimate['device']}, scaled to {estimate['steps']} steps and the probes before and after)"
    )
