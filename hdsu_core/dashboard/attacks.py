"""The Compare page's "Is it really gone?" tab: each attack's forget accuracy before (the original
model), unlearned and attacked, for one run or for every method of a bench; the stronger
membership attacks' AUCs; the verdict rows. Pure pandas over stored metrics (no torch)."""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from hdsu_core import fmt
from hdsu_core.attack_targets import FORMATS, MIA_ATTACKS, attack_checks

# (probe, before key, unlearned key, attacked key): forget accuracies of the original model, the
# unlearned model and the unlearned model under the attack.
ACCURACY_PROBES: tuple[tuple[str, str, str, str], ...] = (
    (
        "Relearn on half A, accuracy on half B",
        "attack_relearn_acc_b_original",
        "attack_relearn_acc_b_unlearned",
        "attack_relearn_acc_b_attacked",
    ),
    (
        "Relearn on retained items only",
        "forget_acc_before",
        "forget_acc_after",
        "attack_relearn_retain_only_acc_attacked",
    ),
    ("INT8 weights", "forget_acc_before", "forget_acc_after", "attack_quant8_forget_acc"),
    ("4-bit weights", "forget_acc_before", "forget_acc_after", "attack_quant4_forget_acc"),
    *(
        (f"Format: {f}", f"attack_format_{f}_forget_acc_original", "forget_acc_after", f"attack_format_{f}_forget_acc")
        for f in FORMATS
    ),
)
MIA_LABELS = {"minkpp": "Min-K%++", "zlib": "zlib-normalised loss", "ref": "reference model (retrain)"}


def has_attacks(metrics: Mapping) -> bool:
    return any(str(k).startswith("attack_") for k in metrics)


def gone_rows(metrics: Mapping) -> list[dict]:
    """One row per accuracy probe the run measured: before / unlearned / attacked and the change
    the attack makes (attacked - unlearned, in points)."""
    out = []
    for probe, b, u, a in ACCURACY_PROBES:
        attacked = fmt.number(metrics.get(a))
        if attacked is None:
            continue
        unlearned = fmt.number(metrics.get(u))
        out.append(
            {
                "probe": probe,
                "before": fmt.number(metrics.get(b)),
                "unlearned": unlearned,
                "attacked": attacked,
                "change_pts": None if unlearned is None else 100 * (attacked - unlearned),
            }
        )
    return out


def gone_table(metrics: Mapping) -> pd.DataFrame:
    return pd.DataFrame(gone_rows(metrics), columns=["probe", "before", "unlearned", "attacked", "change_pts"])


def membership_table(metrics: Mapping) -> pd.DataFrame:
    """The stronger membership attacks: AUC on the original and on the unlearned model, with the
    unlearned model's 95 % bootstrap interval (0.5 = cannot tell the forget items from unseen ones)."""
    rows = []
    for a in MIA_ATTACKS:
        auc = fmt.number(metrics.get(f"mia_auc_{a}"))
        if auc is None:
            continue
        lo, hi = fmt.number(metrics.get(f"mia_auc_{a}_ci_low")), fmt.number(metrics.get(f"mia_auc_{a}_ci_high"))
        rows.append(
            {
                "attack": MIA_LABELS[a],
                "auc_before": fmt.number(metrics.get(f"mia_auc_{a}_before")),
                "auc_after": auc,
                "interval_95": "" if lo is None or hi is None else f"{lo:.2f}–{hi:.2f}",
            }
        )
    return pd.DataFrame(rows, columns=["attack", "auc_before", "auc_after", "interval_95"])


def verdict_table(metrics: Mapping) -> pd.DataFrame:
    rows = [
        {k: r[k] for k in ("name", "target", "value")} | {"status": r["status"].upper()} for r in attack_checks(metrics)
    ]
    return pd.DataFrame(rows, columns=["name", "target", "value", "status"])


def latest_attack_bench(bench: pd.DataFrame) -> pd.DataFrame:
    """The rows (one per dataset and method) of the newest bench that ran the attacks."""
    if bench.empty:
        return bench
    with_attacks = bench[bench["metrics"].map(lambda m: isinstance(m, dict) and has_attacks(m))]
    if with_attacks.empty:
        return with_attacks
    newest = with_attacks.sort_values("created_at").iloc[-1]["bench_id"]
    return with_attacks[with_attacks["bench_id"] == newest].reset_index(drop=True)


def methods_side_by_side(bench_rows: pd.DataFrame, probe: str) -> pd.DataFrame:
    """One probe across the methods of a bench (the retrain reference first): before / unlearned /
    attacked per method."""
    rows = []
    for _, r in bench_rows.iterrows():
        for row in gone_rows(r["metrics"]):
            if row["probe"] == probe:
                rows.append(
                    {"dataset": r["dataset"], "method": r["method"], **{k: v for k, v in row.items() if k != "probe"}}
                )
    out = pd.DataFrame(rows, columns=["dataset", "method", "before", "unlearned", "attacked", "change_pts"])
    return out.sort_values("method", key=lambda s: s != "retrain", kind="stable").reset_index(drop=True)


def probe_names(bench_rows: pd.DataFrame) -> list[str]:
    """The accuracy probes measured in these bench rows, in the table's order."""
    seen = {row["probe"] for m in bench_rows.get("metrics", []) for row in gone_rows(m)}
    return [p for p, *_ in ACCURACY_PROBES if p in seen]
