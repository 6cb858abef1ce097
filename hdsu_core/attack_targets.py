"""The targets of the "Is it really gone?" attacks (hdsu_core.attacks) and their PASS / FAIL rows
(the audit report's verdict, the bench's target columns, the Compare page). No torch: the report
and the dashboard read it. A row exists only where its attack ran, so a run without attacks is
judged as before.

Relative targets compare with the retrain reference when the run's metrics carry its numbers
(``..._retrain``, written by the bench: ``retrain_comparison``); the format-shift target falls back
to the never-seen accuracy on the selected concepts under the same format.
"""

from __future__ import annotations

from typing import Mapping

from hdsu_core import fmt

# The format-shift probes (attacks/format_shift.py) and the stronger membership attacks
# (attacks/membership.py), named here so that the verdict needs neither module.
FORMATS = ("shuffled", "wording", "letters", "fewshot", "rewrite")
MIA_ATTACKS = ("minkpp", "zlib", "ref")

ATTACK_TARGETS = {
    "relearn_recovery_max": 0.35,  # share of the forgotten accuracy a relearning attack brings back
    "relearn_over_retrain_max": 0.10,  # ... and at most retrain's + 10 points
    "quant4_gap_points_max": 2.0,  # forget accuracy after 4-bit quantization - before, in points
    "format_margin_points": 5.0,  # format-shift forget accuracy <= reference + 5 points
    "mia_auc_center": 0.5,
    "mia_auc_tolerance": 0.05,
}
MIA_LABELS = {"minkpp": "Min-K%++", "zlib": "zlib", "ref": "reference model"}
# what each attack of hdsu_core.attacks does, in the words the Unlearn page offers them with
ATTACK_LABELS = {
    "relearn": "relearning (fine-tune on half the forget items)",
    "quant": "quantization (INT8 and 4-bit weights)",
    "format": "format shift (shuffled options, other prompts, rewrites)",
    "mia": "stronger membership attacks (Min-K%++, zlib, reference model)",
}
EPS = 1e-9


def retrain_comparison(retrain: Mapping[str, float | None]) -> dict[str, float]:
    """The retrain reference's attack numbers under ``..._retrain`` names, to store with a run."""
    keys = ["attack_relearn_recovery", "attack_relearn_retain_only_recovery", "attack_quant4_forget_gap_points"]
    keys += [f"attack_format_{f}_forget_acc" for f in FORMATS]
    keys += [f"mia_auc_{a}" for a in MIA_ATTACKS]
    out = {}
    for k in keys:
        v = fmt.number(retrain.get(k))
        if v is not None:
            out[f"{k}_retrain"] = v
    return out


def _row(name: str, target: str, value: str, ok: bool | None) -> dict:
    return {
        "name": name,
        "target": target,
        "value": value,
        "status": "n/a" if ok is None else ("pass" if ok else "fail"),
        "note": "",
    }


def _relearn(m: Mapping, key: str, ran: str, name: str) -> dict | None:
    """``ran``: a metric the attack always writes (the recovery is missing when nothing was forgotten)."""
    if ran not in m:
        return None
    rec, ref = fmt.number(m.get(key)), fmt.number(m.get(f"{key}_retrain"))
    T = ATTACK_TARGETS
    target = f"recovery ≤ {100 * T['relearn_recovery_max']:.0f} %"
    ok = None if rec is None else rec <= T["relearn_recovery_max"] + EPS
    value = fmt.REPORT.pct(rec, 0)
    if ref is not None:
        target += f" and ≤ retrain reference + {100 * T['relearn_over_retrain_max']:.0f} pts"
        value += f" (retrain {fmt.REPORT.pct(ref, 0)})"
        ok = None if rec is None else bool(ok) and rec <= ref + T["relearn_over_retrain_max"] + EPS
    return _row(name, target, value, ok)


def _quant(m: Mapping) -> dict | None:
    if "attack_quant4_forget_gap_points" not in m:
        return None
    gap = fmt.number(m.get("attack_quant4_forget_gap_points"))
    limit = ATTACK_TARGETS["quant4_gap_points_max"]
    value = fmt.REPORT.signed(gap, 1, " pts")
    below = fmt.number(m.get("attack_quant4_below_half_bin"))
    if below is not None:
        value += f"; {fmt.REPORT.pct(below, 0)} of the changed weights moved by less than half a 4-bit bin"
    return _row(
        "4-bit quantization",
        f"forget accuracy after 4-bit quantization − before ≤ {limit:.0f} pts",
        value,
        None if gap is None else gap <= limit + EPS,
    )


def _format(m: Mapping) -> dict | None:
    measured = [f for f in FORMATS if f"attack_format_{f}_forget_acc" in m]
    if not measured:
        return None
    margin = ATTACK_TARGETS["format_margin_points"] / 100
    worst, worst_over, ok, reference_name = "", None, True, "retrain reference"
    for f in measured:
        acc = fmt.number(m.get(f"attack_format_{f}_forget_acc"))
        ref = fmt.number(m.get(f"attack_format_{f}_forget_acc_retrain"))
        if ref is None:
            ref, reference_name = fmt.number(m.get(f"attack_format_{f}_never_seen_acc")), "never-seen accuracy"
        if acc is None or ref is None:
            continue
        over = acc - ref
        ok = ok and over <= margin + EPS
        if worst_over is None or over > worst_over:
            worst, worst_over = f, over
    value = (
        fmt.REPORT.missing
        if worst_over is None
        else f"worst: {worst}, {fmt.REPORT.pct(m.get(f'attack_format_{worst}_forget_acc'), 0)} "
        f"({fmt.REPORT.signed(100 * worst_over, 0, ' pts')} over its reference)"
    )
    return _row(
        "Format shift",
        f"forget accuracy under every format ≤ {reference_name} under it + {100 * margin:.0f} pts",
        value,
        None if worst_over is None else ok,
    )


def _membership(m: Mapping) -> dict | None:
    measured = [a for a in MIA_ATTACKS if f"mia_auc_{a}" in m]
    if not measured:
        return None
    center, tol = ATTACK_TARGETS["mia_auc_center"], ATTACK_TARGETS["mia_auc_tolerance"]
    aucs = {a: fmt.number(m.get(f"mia_auc_{a}")) for a in measured}
    ok = None if any(v is None for v in aucs.values()) else all(abs(v - center) <= tol + EPS for v in aucs.values())  # type: ignore[operator]
    value = ", ".join(f"{MIA_LABELS[a]} {fmt.REPORT.fixed(v, 2)}" for a, v in aucs.items())
    return _row("Stronger membership attacks", f"every AUC within {center:.2f} ± {tol:.2f}", value, ok)


def attack_checks(metrics: Mapping[str, float | None]) -> list[dict]:
    """One verdict row per attack that ran (same fields as the audit verdict's rows)."""
    rows = [
        _relearn(metrics, "attack_relearn_recovery", "attack_relearn_n_b", "Relearning (half of the forget items)"),
        _relearn(
            metrics,
            "attack_relearn_retain_only_recovery",
            "attack_relearn_retain_only_acc_attacked",
            "Relearning (retained items only)",
        ),
        _quant(metrics),
        _format(metrics),
        _membership(metrics),
    ]
    return [r for r in rows if r is not None]


def attack_targets_met(metrics: Mapping[str, float | None]) -> dict[str, bool | None]:
    """Row name -> met (None: not judged), for the bench's target columns."""
    return {r["name"]: None if r["status"] == "n/a" else r["status"] == "pass" for r in attack_checks(metrics)}


# The headline number of each attack: (short header, metric, kind: "pct" a share, "pts" points,
# "auc", "sec"), for the bench table and the Compare page.
ATTACK_COLUMNS = (
    ("relearn_rec", "attack_relearn_recovery", "pct"),
    ("retain_rel_rec", "attack_relearn_retain_only_recovery", "pct"),
    ("q8_gap", "attack_quant8_forget_gap_points", "pts"),
    ("q4_gap", "attack_quant4_forget_gap_points", "pts"),
    ("<half_bin", "attack_quant4_below_half_bin", "pct"),
    ("format_max", "attack_format_max_forget_acc", "pct"),
    ("minkpp", "mia_auc_minkpp", "auc"),
    ("zlib", "mia_auc_zlib", "auc"),
    ("ref", "mia_auc_ref", "auc"),
    ("atk_sec", "attack_seconds", "sec"),
)
# (short header, verdict row name) of the targets.
TARGET_COLUMNS = (
    ("relearn<=35%", "Relearning (half of the forget items)"),
    ("retain_rel<=35%", "Relearning (retained items only)"),
    ("q4<=2pts", "4-bit quantization"),
    ("format<=ref+5", "Format shift"),
    ("mia.50+-.05", "Stronger membership attacks"),
)
