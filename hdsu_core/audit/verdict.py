"""The report's verdict: four targets (forgetting, retained knowledge, membership privacy, minimal
edit), plus one per "Is it really gone?" attack the run ran (hdsu_core.attack_targets), each
passed, failed or not measured, and the overall result."""

from __future__ import annotations

from typing import Mapping

from hdsu_core import fmt
from hdsu_core.attack_targets import attack_checks

TARGETS = {
    "forget_margin": 0.05,  # forget acc after <= reference (never-seen / chance) + margin
    "retain_change_points": 2.0,  # |retain acc after - before| <= 2 percentage points
    "mia_auc_center": 0.5,
    "mia_auc_tolerance": 0.05,  # MIA AUC within 0.5 +- 0.05
    "changed_fraction_max": 0.001,  # <= 0.1 % of weights changed
}


def _check(name: str, target: str, value: str, ok: bool | None) -> dict:
    return {
        "name": name,
        "target": target,
        "value": value,
        "status": "n/a" if ok is None else ("pass" if ok else "fail"),
        "note": "",
    }


def chance_level(rows: list[dict]) -> float | None:
    """Mean 1 / (number of options) over the probe rows that record their options."""
    ks = [
        len(r["option_logprobs"]) for r in rows if isinstance(r.get("option_logprobs"), list) and r["option_logprobs"]
    ]
    return sum(1.0 / k for k in ks) / len(ks) if ks else None


def _forget_reference(metrics: Mapping[str, float | None], after_rows: list[dict]) -> tuple[float, str]:
    """What forget accuracy after is held against: never-seen accuracy on the selected concepts,
    else the chance level of the forget questions, else 1 in 4."""
    ref = fmt.number(metrics.get("holdout_forget_acc_after"))
    if ref is not None:
        return ref, "never-seen accuracy on the selected concepts"
    ref = chance_level([r for r in after_rows if r.get("split") == "forget"])
    if ref is not None:
        return ref, "chance level"
    return 0.25, "assumed chance level (4 options)"


def _forgetting(metrics: Mapping[str, float | None], after_rows: list[dict]) -> dict:
    fa = fmt.number(metrics.get("forget_acc_after"))
    ref, ref_name = _forget_reference(metrics, after_rows)
    margin = TARGETS["forget_margin"]
    return _check(
        "Forgetting",
        f"forget accuracy after ≤ {ref_name} ({fmt.REPORT.pct(ref)}) + {margin * 100:.0f} pts",
        fmt.REPORT.pct(fa),
        None if fa is None else fa <= ref + margin + 1e-12,
    )


def _retained(metrics: Mapping[str, float | None]) -> dict:
    rc = fmt.number(metrics.get("retain_change_points"))
    after, before = fmt.number(metrics.get("retain_acc_after")), fmt.number(metrics.get("retain_acc_before"))
    if rc is None and after is not None and before is not None:
        rc = 100 * (after - before)
    limit = TARGETS["retain_change_points"]
    return _check(
        "Retained knowledge",
        f"retain accuracy change within ±{limit:.0f} points",
        fmt.REPORT.signed(rc, 2, " pts"),
        None if rc is None else abs(rc) <= limit + 1e-9,
    )


def _privacy(metrics: Mapping[str, float | None]) -> dict:
    auc = fmt.number(metrics.get("mia_auc"))
    center, tol = TARGETS["mia_auc_center"], TARGETS["mia_auc_tolerance"]
    ci_lo, ci_hi = fmt.number(metrics.get("mia_auc_ci_low")), fmt.number(metrics.get("mia_auc_ci_high"))
    measured = fmt.REPORT.fixed(auc)
    if ci_lo is not None and ci_hi is not None:
        measured += f" (95 % interval {fmt.REPORT.fixed(ci_lo, 2)}–{fmt.REPORT.fixed(ci_hi, 2)})"
    return _check(
        "Membership privacy",
        f"MIA AUC within {center:.2f} ± {tol:.2f}",
        measured,
        None if auc is None else center - tol - 1e-12 <= auc <= center + tol + 1e-12,
    )


def _minimal_edit(metrics: Mapping[str, float | None]) -> dict:
    cf = fmt.number(metrics.get("changed_fraction"))
    limit = TARGETS["changed_fraction_max"]
    return _check(
        "Minimal edit",
        f"changed-weight fraction ≤ {100 * limit:.1f} %",
        fmt.REPORT.pct(cf, 4),
        None if cf is None else cf <= limit + 1e-15,
    )


def _overall(states: list[str], finished: bool) -> tuple[str, str]:
    if not finished or all(s == "n/a" for s in states):
        return "incomplete", "No verdict: the run has not finished or has no metrics."
    if "fail" in states:
        return "fail", f"{states.count('fail')} of {len(states)} targets missed."
    if "n/a" in states:
        return "incomplete", "Targets met where measured; some metrics are missing."
    return "pass", "All targets met."


def verdict(metrics: Mapping[str, float | None], after_rows: list[dict], finished: bool) -> dict:
    """{"overall": pass | fail | incomplete, "text", "checks": one row per target}."""
    checks = [_forgetting(metrics, after_rows), _retained(metrics), _privacy(metrics), _minimal_edit(metrics)]
    checks += attack_checks(metrics)  # "Is it really gone?": rows only for the attacks the run ran
    overall, text = _overall([c["status"] for c in checks], finished)
    return {"overall": overall, "text": text, "checks": checks}
