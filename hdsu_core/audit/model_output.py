"""The report's "Model output and receipt" part: which weights went in and came out (root hashes),
the delta, the code and data hashes of the receipt, and the chain of earlier runs the model
descends from. A receipt that fails its own hash is reported as such, not hidden."""

from __future__ import annotations


def _chain(store, run_id: str) -> list[dict]:
    from hdsu_core.artifacts.run_models import RunModelError, lineage  # lazy: torch (keeps the CLI start fast)

    try:
        chain = lineage(store, run_id)
    except RunModelError as e:  # an ancestor's receipt is broken: say so in the chain
        return [{"label": f"(chain broken: {e})", "root": ""}]
    out = []
    for step in chain:
        if "model" in step:
            out.append({"label": f"original model {step['model']}", "root": step["root"]})
        else:
            forgot = ", ".join(step.get("forget") or []) or "-"
            out.append({"label": f"run {step['run']} (forgot {forgot})", "root": step["root"]})
    return out


def model_output(store, run_id: str) -> dict | None:
    """None when the run has no receipt (unfinished, or older than receipts)."""
    from hdsu_core.artifacts.receipt import receipt_sha256  # lazy: with run_models (torch)
    from hdsu_core.artifacts.run_models import RunModelError, get_run_model  # lazy: torch

    if store.get_run_model(run_id) is None:
        return None
    try:
        rm = get_run_model(store, run_id)
    except RunModelError as e:
        return {"error": str(e)}
    r, delta = rm.receipt, rm.receipt.get("delta")
    if rm.files_deleted:
        files = "deleted (the receipt remains)"
    elif delta is None:
        files = "not kept (receipt only)"
    else:
        files = f"{delta['changed_weights']:,} weights in {delta['changed_tensors']} tensors, {delta['bytes']:,} bytes"
    return {
        "receipt_sha256": receipt_sha256(r),  # equal to the stored one: get_run_model checked it
        "original_root": rm.original.root,
        "unlearned_root": rm.unlearned.root,
        "delta_sha256": delta["sha256"] if delta else None,
        "files": files,
        "code_version": r.get("code_version"),
        "item_hashes": r.get("items", {}),
        "hierarchy_sha256": r.get("hierarchy", {}).get("sha256"),
        "audit_chain_head": r.get("audit_chain_head"),
        "chain": _chain(store, run_id),
    }
