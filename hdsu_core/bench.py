"""Benchmarks: every method on the same model and split, plus the retrain reference; printed as a
table and stored in DuckDB (``bench_results``)."""

from __future__ import annotations

import time
from typing import Sequence

from hdsu_core.attack_targets import ATTACK_COLUMNS, TARGET_COLUMNS, attack_targets_met, retrain_comparison
from hdsu_core.audit import TARGETS as AUDIT_TARGETS
from hdsu_core.engine import (
    RunConfig,
    check_run_options,
    check_settings,
    check_training_options,
    forget_selection,
    retrain_reference,
    run_unlearning,
)
from hdsu_core.fmt import method_label
from hdsu_core.lifecycle import create_run, execute_run
from hdsu_core.methods import get_method
from hdsu_core.progress import ProgressFn, no_progress

KEYS = [
    "forget_acc_before",
    "forget_acc_after",
    "retain_acc_before",
    "retain_acc_after",
    "mia_auc",
    "mia_auc_ci_low",
    "mia_auc_ci_high",
    "mia_auc_mink",
    "changed_fraction",
    "seconds",
]


# The engine issue's targets for one run, judged against the retrain reference of the same seed.
# The thresholds are the audit report's (one definition); run time is the benchmark's own target.
SECONDS_TARGET = 30.0


def target_checks(row: dict, ref: dict | None) -> dict[str, bool | None]:
    """Which targets one bench row meets (None: cannot be judged, e.g. no retrain reference)."""

    def ok(v, cond):
        return None if v is None else bool(cond(v))

    T = AUDIT_TARGETS
    f_ref = None if ref is None else ref.get("forget_acc_after")
    return {
        "forget": None
        if f_ref is None or row.get("forget_acc_after") is None
        else 100 * (row["forget_acc_after"] - f_ref) <= 100 * T["forget_margin"] + 1e-9,
        "retain": None
        if row.get("retain_acc_after") is None or row.get("retain_acc_before") is None
        else 100 * (row["retain_acc_before"] - row["retain_acc_after"]) <= T["retain_change_points"] + 1e-9,
        "mia": ok(row.get("mia_auc"), lambda v: abs(v - T["mia_auc_center"]) <= T["mia_auc_tolerance"] + 1e-9),
        "changed": ok(row.get("changed_fraction"), lambda v: v <= T["changed_fraction_max"] + 1e-9),
        "time": ok(row.get("seconds"), lambda v: v <= SECONDS_TARGET),
    }


def summarise_seeds(rows: list[dict]) -> list[dict]:
    """Per dataset and method over the seeds: mean forget / retain accuracy after and MIA AUC, and
    on how many seeds each target is met (``targets`` maps target -> "met/judged")."""
    refs = {(r["dataset"], r.get("seed")): r for r in rows if r["method"] == "retrain"}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["method"]), []).append(r)
    out = []
    for (ds, method), rs in groups.items():
        checks = [target_checks(r, refs.get((ds, r.get("seed")))) for r in rs]
        targets = {}
        for t in ("forget", "retain", "mia", "changed", "time"):
            judged = [c[t] for c in checks if c[t] is not None]
            targets[t] = f"{sum(judged)}/{len(judged)}" if judged else "-"
        out.append(
            {
                "dataset": ds,
                "method": method,
                "seed": "all",
                "runs": len(rs),
                "seeds": sorted(r.get("seed") for r in rs),
                "forget_acc_after": _mean(rs, "forget_acc_after"),
                "retain_acc_after": _mean(rs, "retain_acc_after"),
                "mia_auc": _mean(rs, "mia_auc"),
                "seconds": _mean(rs, "seconds"),
                "targets": targets,
            }
        )
    return out


def _mean(rows: list[dict], key: str) -> float | None:
    """Mean of ``key`` over the rows that have it (None when none has)."""
    vals = [r[key] for r in rows if r.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


def format_summary(summary: list[dict]) -> str:
    head = [
        "dataset",
        "method",
        "runs",
        "forget_a",
        "retain_a",
        "mia_auc",
        "sec",
        "forget<=retrain+5",
        "retain>=-2",
        "mia.50+-.05",
        "changed<=0.1%",
        "sec<=30",
    ]

    def f(v, d=3):
        return "-" if v is None else f"{v:.{d}f}"

    table = [head]
    for r in summary:
        t = r["targets"]
        table.append(
            [
                str(r["dataset"])[:28],
                r["method"],
                str(r["runs"]),
                f(r["forget_acc_after"], 2),
                f(r["retain_acc_after"]),
                f(r["mia_auc"]),
                f(r["seconds"], 1),
                t["forget"],
                t["retain"],
                t["mia"],
                t["changed"],
                t["time"],
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in table)


def method_settings(methods: Sequence[str], overrides: dict[str, object]) -> dict[str, dict]:
    """Per-method settings from ``bench --set``: ``KEY`` goes to every benched method that has that
    setting (e.g. ``mask_fraction`` to hdsu and the masked baselines, for a budget curve),
    ``METHOD:KEY`` to that method only. A key no benched method has is refused (a typo would
    otherwise run the defaults silently)."""
    out: dict[str, dict] = {m: {} for m in methods}
    for spec, value in overrides.items():
        method, _, key = spec.rpartition(":")
        targets = [method] if method else [m for m in methods if key in get_method(m).defaults]
        if method and method not in out:
            raise ValueError(f"--set {spec}: {method!r} is not among the benched methods ({', '.join(methods)})")
        if not targets:
            raise ValueError(f"--set {spec}: no benched method has the setting {key!r}")
        for m in targets:
            check_settings(m, {key: value})
            out[m][key] = value
    return {m: v for m, v in out.items() if v}


def run_bench(
    datasets: Sequence[str],
    methods: Sequence[str],
    *,
    forget: list[str] | None = None,
    seed: int = 0,
    store=None,
    progress: ProgressFn = no_progress,
    retrain: bool = True,
    limit: int | None = None,
    settings: dict | None = None,
    device: str = "auto",
    dtype: str = "float32",
    model: str = "demo",
    inject: bool = False,
    recipe: dict | None = None,
    keep_models: bool = False,
    author: str = "bench",
    worker_pid: int | None = None,
    attacks: Sequence[str] = (),
    lora_r: int | None = None,
) -> list[dict]:
    """``worker_pid``: the process running the bench, recorded on each method's run row so the
    Runs page sees the run alive (and its Cancel reaches the bench). ``recipe``: injection recipe
    overrides (LoRA rank, DP budget), the same for the retrain reference and the runs; ``lora_r``:
    every method unlearns through rank-``lora_r`` LoRA adapters."""
    recipe = dict(recipe or {})
    _check_options(model, inject, recipe, lora_r)
    rows = []
    bench_id = time.strftime("b%Y%m%d-%H%M%S") + (f"-s{seed}" if seed else "")
    for ds in datasets:
        sel = forget_selection(forget, ds)
        ds_rows = []
        if retrain:
            progress("bench", 0.0, f"{ds}: retrain reference")
            ref_cfg = RunConfig(
                forget=sel,
                dataset=ds,
                seed=seed,
                limit=limit,
                model=model,
                inject=inject,
                recipe=recipe,
                device=device,
                attacks=list(attacks),
            )
            ds_rows.append(_retrain_row(ref_cfg, progress))
        for m in methods:
            progress("bench", 0.0, f"{ds}: {m}")
            cfg = RunConfig(
                forget=sel,
                method=m,
                dataset=ds,
                seed=seed,
                limit=limit,
                settings=dict((settings or {}).get(m, {})),
                device=device,
                dtype=dtype,
                model=model,
                inject=inject,
                recipe=recipe,
                keep_model=keep_models,
                attacks=list(attacks),
                unlearn_lora_r=lora_r,
            )
            if store is not None:
                run_id = create_run(store, cfg, author=author)
                if worker_pid:
                    store.update_run(run_id, pid=worker_pid)
                r = execute_run(store, run_id, progress=progress, executor="bench")
            else:
                r = run_unlearning(cfg, progress=progress)
            ds_rows.append(_method_row(cfg, r))
            if attacks and retrain:  # the run's audit report then judges the attacks against the retrain reference
                _add_retrain_comparison(store, ds_rows[-1], ds_rows[0])
        if store is not None:
            store.save_bench(bench_id, ds, ds_rows)
        rows.extend(ds_rows)
    return rows


def _check_options(model: str, inject: bool, recipe: dict, lora_r: int | None) -> None:
    """The injection options and the unlearning LoRA rank, refused before any work."""
    check_training_options(RunConfig(forget=[], model=model, inject=inject, recipe=recipe))
    if lora_r is not None:
        check_run_options(RunConfig(forget=[], unlearn_lora_r=lora_r))


def _retrain_row(cfg: RunConfig, progress: ProgressFn) -> dict:
    """The retrain reference's bench row (and its attacks, with ``cfg.attacks``)."""
    ref = retrain_reference(cfg, progress=progress)
    return {
        "dataset": cfg.dataset,
        "run_id": "",
        **{k: ref.get(k) for k in KEYS},
        **attack_metrics(ref),
        "method": "retrain",
        "forget": cfg.forget,
        "seed": cfg.seed,
    }


def _method_row(cfg: RunConfig, r: dict) -> dict:
    """One method's bench row from its run's result."""
    return {
        "dataset": cfg.dataset,
        "run_id": r["run_id"],
        "method": cfg.method,
        "forget": cfg.forget,
        "seed": cfg.seed,
        **{k: r.get(k) for k in KEYS},
        "stopped": r["info"].get("stopped"),
        "steps": r["info"].get("steps"),
        "unlearn_seconds": r.get("unlearn_seconds"),
        "step_seconds": r["info"].get("step_seconds"),
        "step_tokens": r["info"].get("step_tokens"),
        "tokens_per_s": _tokens_per_s(r["info"]),
        "device": r["info"].get("device"),
        **({"settings": cfg.settings} if cfg.settings else {}),
        **({"lora_r": cfg.unlearn_lora_r} if cfg.unlearn_lora_r else {}),
        **attack_metrics(r),
    }


def _add_retrain_comparison(store, row: dict, ref_row: dict) -> None:
    """The retrain reference's attack numbers into a method's row and its run's stored metrics."""
    comparison = retrain_comparison(ref_row)
    row.update(comparison)
    if store is not None:
        store.write_metrics(row["run_id"], comparison)


def attack_metrics(result: dict) -> dict:
    """The attack metrics of a run's or the retrain reference's result (``hdsu_core.attacks``)."""
    return {k: v for k, v in result.items() if k.startswith(("attack_", "mia_auc_")) and k not in KEYS}


def format_attack_table(rows: list[dict]) -> str:
    """ "Is it really gone?": the attack numbers of every bench row and which targets they meet
    (PASS / FAIL; - where not judged). "" when no row ran an attack."""
    rows = [r for r in rows if "attack_seconds" in r]
    if not rows:
        return ""

    def cell(kind: str, v) -> str:
        if v is None or v != v:
            return "-"
        return {"pct": f"{100 * v:.0f}%", "pts": f"{v:+.1f}", "auc": f"{v:.2f}", "sec": f"{v:.1f}"}[kind]

    head = ["dataset", "method"] + [h for h, _, _ in ATTACK_COLUMNS] + [h for h, _ in TARGET_COLUMNS]
    table = [head]
    for r in rows:
        met = attack_targets_met(r) if r["method"] != "retrain" else {}
        marks = ["-" if met.get(name) is None else ("PASS" if met[name] else "FAIL") for _, name in TARGET_COLUMNS]
        table.append(
            [str(r["dataset"])[:28], r["method"]] + [cell(kind, r.get(k)) for _, k, kind in ATTACK_COLUMNS] + marks
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in table)


def format_table(rows: list[dict]) -> str:
    several_seeds = len({r.get("seed") for r in rows}) > 1
    cols = (
        ["dataset"]
        + (["seed"] if several_seeds else [])
        + [
            "method",
            "forget_acc_before",
            "forget_acc_after",
            "retain_acc_before",
            "retain_acc_after",
            "mia_auc",
            "mia_ci",
            "changed_fraction",
            "seconds",
        ]
    )
    rows = [
        {
            **r,
            "method": method_label(r["method"], lora_r=r.get("lora_r")),
            "mia_ci": None
            if r.get("mia_auc_ci_low") is None
            else f"{r['mia_auc_ci_low']:.2f}-{r['mia_auc_ci_high']:.2f}",
        }
        for r in rows
    ]
    short = {
        "mia_ci": "mia_95%ci",
        "forget_acc_before": "forget_b",
        "forget_acc_after": "forget_a",
        "retain_acc_before": "retain_b",
        "retain_acc_after": "retain_a",
        "mia_auc": "mia_auc",
        "changed_fraction": "changed",
        "seconds": "sec",
        "dataset": "dataset",
        "method": "method",
        "seed": "seed",
    }

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


# (numerator, denominator) of the time ratios printed under the bench table, when both ran.
RATIO_PAIRS = (("hdsu", "grad_diff"), ("hdsu", "grad_diff_masked"), ("hdsu", "npo_masked"))


def format_time_ratios(rows: list[dict]) -> str:
    """Per dataset and pair of ``RATIO_PAIRS`` that both ran in these rows (one bench run):
    ``hdsu / grad_diff: run time X.XX×, one step Y.YY×``. Run time is the method's own run
    (``unlearn_seconds``: mask selection, every step and check, repair and settle; not the model
    load and probes every method shares); one step is ``step_seconds``, the mean update step
    without the stop rule's checks. Means over the seeds when there are several. "" when none."""
    lines = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        by_method: dict[str, list[dict]] = {}
        for r in rows:
            if r["dataset"] == ds:
                by_method.setdefault(r["method"], []).append(r)
        for a, b in RATIO_PAIRS:
            if a in by_method and b in by_method:
                run = _ratio(_mean(by_method[a], "unlearn_seconds"), _mean(by_method[b], "unlearn_seconds"))
                step = _ratio(_mean(by_method[a], "step_seconds"), _mean(by_method[b], "step_seconds"))
                lines.append(f"{a} / {b}: run time {_times(run)}, one step {_times(step)} ({str(ds)[:28]})")
    return "\n".join(lines)


def _tokens_per_s(info: dict) -> float | None:
    """Training throughput of the update steps: tokens in their forward passes per second."""
    tokens, seconds = info.get("step_tokens"), info.get("step_seconds")
    return tokens / seconds if tokens and seconds else None


def format_step_timing(rows: list[dict]) -> str:
    """One line per method row that stepped: ``METHOD: one step X ms, N tokens/step, T tokens/s
    (device)``, the numbers ``bench --device cuda`` is run for (printed on every device)."""
    lines = []
    for r in rows:
        if r.get("step_seconds") is None:
            continue
        tokens = "-" if r.get("step_tokens") is None else f"{r['step_tokens']:.0f}"
        rate = "-" if r.get("tokens_per_s") is None else f"{r['tokens_per_s']:,.0f}"
        lines.append(
            f"{r['method']}: one step {r['step_seconds'] * 1000:.1f} ms, {tokens} tokens/step, "
            f"{rate} tokens/s ({r.get('device')}, {str(r['dataset'])[:28]})"
        )
    return "\n".join(lines)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _times(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}×"
