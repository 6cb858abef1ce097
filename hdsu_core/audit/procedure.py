"""How an unlearning run went, in words: the method's own account (stop reason, update steps,
weight budget, retain repair, settle), shared by the audit report and the Runs page."""

from __future__ import annotations

from typing import Any, Mapping

from hdsu_core import fmt

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


def _repair_text(info: Mapping[str, Any]) -> str:
    lost, left = int(info["repair_damaged_before"]), int(info.get("repair_damaged_after") or 0)
    if lost == 0:
        return "No retained question that the original model answered was lost by the forget updates."
    text = (
        f"{lost} retained question(s) that the original model answered were lost by the forget "
        f"updates; the retain repair restored {lost - left} of them in {int(info.get('repair_steps') or 0)} "
        f"step(s) on the same weights, re-checking the forgetting after every step."
    )
    if info.get("repair_reverted"):
        text += " Its last step was undone because it weakened the forgetting."
    return text


def _settle_text(info: Mapping[str, Any]) -> str:
    text = (
        f"The forget questions had been pushed past never-seen ones (itself a sign they were "
        f"removed); {int(info['settle_steps'])} settle step(s) brought them back to the never-seen level."
    )
    if info.get("settle_reverted"):
        text += " Its last step was undone because it let a forget question be answered again."
    return text


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
        budget = f"{int(info['mask_size']):,} ({fmt.REPORT.pct(info['mask_fraction'], 3)} of all weights)"
        rows.append({"label": "Weights allowed to change", "value": budget})
    if info.get("repair_damaged_before") is not None:
        rows.append({"label": "Retain repair", "value": _repair_text(info)})
    if info.get("settle_steps"):
        rows.append({"label": "Settle", "value": _settle_text(info)})
    if info.get("device"):
        rows.append({"label": "Device", "value": str(info["device"])})
    if info.get("dtype"):
        rows.append({"label": "Weight precision", "value": str(info["dtype"])})
    rows += _compute_rows(info)
    rows += injection_rows(info)
    rows += unlearning_adapter_rows(info)
    return rows


def unlearning_adapter_rows(info: Mapping[str, Any]) -> list[dict]:
    """A run that unlearned through LoRA adapters: their rank and size, how many of their elements
    the method moved, and how many weights the merge changed (what the delta and receipt hold)."""
    if not info.get("unlearn_lora_r"):
        return []
    value = (
        f"rank {info['unlearn_lora_r']}, {int(info.get('unlearn_adapter_params', 0)):,} adapter parameters "
        f"({int(info.get('unlearn_adapter_params_changed', 0)):,} moved), "
        f"{int(info.get('unlearn_merged_weights_changed', 0)):,} weights changed by the merge"
    )
    return [{"label": "Unlearning (LoRA)", "value": value}]


def injection_rows(info: Mapping[str, Any]) -> list[dict]:
    """How the original model was injected, when not on all weights without privacy: the LoRA
    rank and adapter count, and the DP-SGD budget actually spent (an auditor's privacy claim)."""
    rows = []
    if info.get("lora_r"):
        value = (
            f"rank {info['lora_r']}, {int(info.get('adapter_params_trained', 0)):,} adapter parameters trained, "
            f"{int(info.get('merged_weights_changed', 0)):,} weights changed by the merge"
        )
        rows.append({"label": "Injection (LoRA)", "value": value})
    if info.get("dp_epsilon") is not None:
        value = (
            f"epsilon {info['dp_epsilon']:.3f} spent at delta {info['dp_delta']:g}, per-item clip {info['dp_clip']:g}"
        )
        rows.append({"label": "Injection (DP-SGD)", "value": value})
    return rows


def _compute_rows(info: Mapping[str, Any]) -> list[dict]:
    """How the run computed, where it differs from one plain process: data-parallel processes or
    a base sharded over them (torchrun, the same result as one), bfloat16 autocast, gradient
    checkpointing, batch sizes fitted to the GPU's free memory; and the mask's hash (the very
    weights it could change)."""
    rows = []
    if (info.get("processes") or 1) > 1:
        how = "FSDP: the base sharded" if info.get("fsdp") else "data-parallel"
        rows.append({"label": "Processes", "value": f"{info['processes']} ({how}, torchrun)"})
    if info.get("weights_per_process"):
        rows.append({"label": "Weights per process", "value": f"{info['weights_per_process']:,}"})
    if info.get("autocast"):
        rows.append({"label": "Autocast", "value": str(info["autocast"])})
    if info.get("gradient_checkpointing"):
        rows.append({"label": "Gradient checkpointing", "value": "on"})
    if info.get("batch_from_memory"):
        sizes = ", ".join(f"{k} {v}" for k, v in sorted(info["batch_from_memory"].items()))
        rows.append({"label": "Batch sizes from free GPU memory", "value": sizes})
    if info.get("mask_sha256"):
        rows.append({"label": "Mask sha256", "value": str(info["mask_sha256"])})
    return rows
