"""Benchmarks: every method on the same model and split, plus the retrain reference; printed as a
table and stored in DuckDB (``bench_results``)."""
from __future__ import annotations

import time
from typing import Sequence

from hdsu_core.engine import DEFAULT_FORGET, RunConfig, dataset_kind, new_run_id, retrain_reference, run_unlearning

KEYS = ["forget_acc_before", "forget_acc_after", "retain_acc_before", "retain_acc_after",
        "mia_auc", "mia_auc_ci_low", "mia_auc_ci_high", "mia_auc_mink", "changed_fraction", "seconds"]


def run_bench(datasets: Sequence[str], methods: Sequence[str], *, forget: list[str] | None = None,
              seed: int = 0, store=None, progress=lambda p, f, m: None, retrain: bool = True,
              limit: int | None = None, settings: dict | None = None) -> list[dict]:
    rows = []
    bench_id = time.strftime("b%Y%m%d-%H%M%S")
    for ds in datasets:
        sel = forget or DEFAULT_FORGET.get(dataset_kind(ds), [])
        ds_rows = []
        if retrain:
            progress("bench", 0.0, f"{ds}: retrain reference")
            ref = retrain_reference(RunConfig(forget=sel, dataset=ds, seed=seed, limit=limit), progress=progress)
            ds_rows.append({"dataset": ds, "run_id": "", **{k: ref.get(k) for k in KEYS}, "method": "retrain",
                            "forget": sel})
        for m in methods:
            progress("bench", 0.0, f"{ds}: {m}")
            cfg = RunConfig(forget=sel, method=m, dataset=ds, seed=seed, limit=limit,
                            settings=dict((settings or {}).get(m, {})))
            run_id = new_run_id()
            if store is not None:
                store.create_run(run_id, author="bench", method=m, model=cfg.model, dataset=ds,
                                 forget_concepts=sel, config=cfg.to_dict(), config_hash=cfg.hash())
                store.set_status(run_id, "running")
            r = run_unlearning(cfg, store=store, run_id=run_id, progress=progress)
            if store is not None:
                store.set_status(run_id, "done")
            ds_rows.append({"dataset": ds, "run_id": run_id, "method": m, "forget": sel,
                            **{k: r.get(k) for k in KEYS},
                            "stopped": r["info"].get("stopped"), "steps": r["info"].get("steps")})
        if store is not None:
            store.save_bench(bench_id, ds, ds_rows)
        rows.extend(ds_rows)
    return rows


def format_table(rows: list[dict]) -> str:
    cols = ["dataset", "method", "forget_acc_before", "forget_acc_after", "retain_acc_before",
            "retain_acc_after", "mia_auc", "mia_ci", "changed_fraction", "seconds"]
    rows = [{**r, "mia_ci": None if r.get("mia_auc_ci_low") is None else
             f"{r['mia_auc_ci_low']:.2f}-{r['mia_auc_ci_high']:.2f}"} for r in rows]
    short = {"mia_ci": "mia_95%ci", "forget_acc_before": "forget_b", "forget_acc_after": "forget_a", "retain_acc_before": "retain_b",
             "retain_acc_after": "retain_a", "mia_auc": "mia_auc", "changed_fraction": "changed",
             "seconds": "sec", "dataset": "dataset", "method": "method"}

    def fmt(k, v):
        if v is None:
            return "-"
        if k == "changed_fraction":
            return f"{100 * v:.3f}%"
        if k == "seconds":
            return f"{v:.1f}"
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)[:28]
    table = [[short[c] for c in cols]] + [[fmt(c, r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in table)
