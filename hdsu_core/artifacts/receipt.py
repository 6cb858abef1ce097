"""The run receipt: everything an auditor needs to prove which model went in, which came out,
on what data and with which code, as one canonical JSON document with its own sha256."""

from __future__ import annotations

import functools
import hashlib
import subprocess
import time

from hdsu_core import paths
from hdsu_core.security.keys import canonical_json
from hdsu_core.weight_hashes import WeightsHash, ids_hash

RECEIPT_FORMAT = "hdsu-run-receipt/1"
# The metrics a receipt carries (the full set stays in the database).
HEADLINE = (
    "forget_acc_before",
    "forget_acc_after",
    "retain_acc_before",
    "retain_acc_after",
    "holdout_acc_before",
    "holdout_acc_after",
    "mia_auc",
    "changed_weights",
    "total_weights",
    "changed_fraction",
    "seconds",
)


def receipt_sha256(receipt: dict) -> str:
    return hashlib.sha256(canonical_json(receipt).encode()).hexdigest()


def hierarchy_sha256(hierarchy_dict: dict) -> str:
    return hashlib.sha256(canonical_json(hierarchy_dict).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the checkout (``+dirty`` with uncommitted changes), else the package
    version: the receipt names the code that produced the model."""
    try:
        head = subprocess.run(
            ["git", "-C", str(paths.PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode == 0:
            dirty = subprocess.run(
                ["git", "-C", str(paths.PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            return f"git:{head.stdout.strip()}" + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib import metadata  # lazy: only without a git checkout

    try:
        return f"package:{metadata.version('hdsu-studio')}"
    except metadata.PackageNotFoundError:
        return "unknown"


def build_receipt(
    *,
    run: dict,
    original: WeightsHash,
    unlearned: WeightsHash,
    source: dict,
    delta_info: dict | None,
    split_ids: dict[str, list[str]],
    hierarchy: dict,
    compute: dict,
    metrics: dict,
    training: dict | None = None,
    adapter: dict | None = None,
) -> dict:
    """``run``: the run row (id, author, config); ``source``: where the original came from
    (``{"model": path}`` or ``{"run": parent_run_id}``); ``delta_info``: the delta file's name,
    sha256 and size (None when the run's model files were not kept); ``training``: how the original
    was injected (LoRA rank, adapter count, DP epsilon / delta / clip), only when LoRA or DP was used;
    ``adapter``: the LoRA rank the unlearning trained and what it changed, only for such a run
    (other receipts keep their fields, and so their hashes' inputs, as before)."""
    receipt = {
        "format": RECEIPT_FORMAT,
        "run_id": run["run_id"],
        "actor": run.get("author") or "",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "method": run.get("method"),
        "dataset": run.get("dataset"),
        "forget_concepts": run.get("forget_concepts") or [],
        "config_hash": run.get("config_hash"),
        "config": run.get("config") or {},
        "original": {**source, **original.to_dict()},
        "unlearned": unlearned.to_dict(),
        "delta": delta_info,
        "items": {f"{part}_sha256": ids_hash(ids) for part, ids in split_ids.items()}
        | {f"n_{part}": len(ids) for part, ids in split_ids.items()},
        "hierarchy": hierarchy,
        "code_version": code_version(),
        "compute": compute,
        "metrics": {k: metrics[k] for k in HEADLINE if k in metrics},
    }
    if training:
        receipt["training"] = training
    if adapter:
        receipt["unlearning_adapter"] = adapter
    return receipt
