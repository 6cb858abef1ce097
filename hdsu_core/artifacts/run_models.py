"""Every finished run's model output: its receipt (always, also in DuckDB) and its sparse delta
(``var/models/runs/RUN_ID/``, unless the run was told not to keep it). From them the unlearned
model is rebuilt on demand (original + delta, checked against the receipt's hashes), rolled back,
verified against a file someone hands in, and chained: a run may start from an earlier run's
unlearned model, and its receipt names that model's hash as its original.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from hdsu_core import paths
from hdsu_core.artifacts.delta import apply_delta, changed_weights, compute_delta, load_delta, save_delta
from hdsu_core.artifacts.receipt import build_receipt, canonical_json, receipt_sha256
from hdsu_core.compute import resolve_compute
from hdsu_core.liveness import pid_alive
from hdsu_core.models import ModelBundle, load_model
from hdsu_core.security.keys import sign_document
from hdsu_core.security.roles import require
from hdsu_core.weight_hashes import WeightsHash, file_sha256, first_mismatch, hash_state, tied_aliases

DELTA_FILE = "delta.safetensors"
RECEIPT_FILE = "receipt.json"


class RunModelError(ValueError):
    """A run's model output is missing, tampered with or does not match what is asked."""


def runs_dir() -> Path:
    return paths.run_models_dir()


def run_dir(run_id: str) -> Path:
    return runs_dir() / run_id


def write_run_files(run_id: str, delta: dict, delta_meta: dict, receipt_without_delta) -> tuple[dict, Path, int]:
    """Write the delta and the receipt into a temp directory, then rename it to ``runs/RUN_ID``:
    a run killed while writing leaves only a ``.tmp`` directory, never a half model.
    ``receipt_without_delta(delta_info)`` builds the receipt once the delta file's hash is known."""
    final = run_dir(run_id)
    tmp = runs_dir() / f".tmp-{run_id}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_delta(delta, tmp / DELTA_FILE, delta_meta)
        info = {"file": DELTA_FILE, "sha256": file_sha256(tmp / DELTA_FILE), "bytes": (tmp / DELTA_FILE).stat().st_size}
        info |= {"changed_weights": changed_weights(delta), "changed_tensors": len(delta)}
        receipt = receipt_without_delta(info)
        (tmp / RECEIPT_FILE).write_text(canonical_json(receipt))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return receipt, final, sum(f.stat().st_size for f in final.iterdir())


def sweep_stale_tmp() -> list[str]:
    """Remove ``.tmp`` directories left by runs whose process is gone; returns their names."""
    removed = []
    for p in runs_dir().glob(".tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


@dataclass
class RunModel:
    """A run's receipt row, decoded."""

    run_id: str
    receipt: dict
    parent_run_id: str | None
    base_model: str | None
    files_dir: str | None
    files_bytes: int | None
    files_deleted: bool

    @property
    def original(self) -> WeightsHash:
        return WeightsHash.from_dict(self.receipt["original"])

    @property
    def unlearned(self) -> WeightsHash:
        return WeightsHash.from_dict(self.receipt["unlearned"])

    @property
    def dtype(self) -> str:
        return self.receipt.get("compute", {}).get("dtype", "float32")


def get_run_model(store, run_id: str) -> RunModel:
    row = store.get_run_model(run_id)
    if row is None:
        if store.get_run(run_id) is None:
            raise RunModelError(f"unknown run {run_id}")
        raise RunModelError(f"run {run_id} has no receipt (it did not finish, or finished before receipts existed)")
    receipt = row["receipt"]
    if receipt_sha256(receipt) != row["receipt_sha256"]:
        raise RunModelError(f"the stored receipt of run {run_id} does not match its sha256: it was edited")
    return RunModel(
        run_id,
        receipt,
        row.get("parent_run_id"),
        row.get("base_model"),
        row.get("files_dir"),
        row.get("files_bytes"),
        row.get("files_deleted_at") is not None,
    )


def load_run_delta(rm: RunModel) -> dict:
    """The run's delta, after checking the file against the receipt."""
    if rm.receipt.get("delta") is None:
        raise RunModelError(f"run {rm.run_id} kept no model files (a bench run without --keep-models)")
    if rm.files_deleted or not rm.files_dir:
        raise RunModelError(f"the model files of run {rm.run_id} were deleted; its receipt remains")
    path = Path(rm.files_dir) / DELTA_FILE
    if not path.exists():
        raise RunModelError(f"the delta of run {rm.run_id} is missing: {path}")
    if file_sha256(path) != rm.receipt["delta"]["sha256"]:
        raise RunModelError(f"the delta file {path} does not match the receipt of run {rm.run_id}: it was altered")
    delta, _ = load_delta(path)
    return delta


def check_weights(model: torch.nn.Module, expected: WeightsHash, what: str) -> None:
    actual = hash_state(model.state_dict())
    if actual.root != expected.root:
        bad = first_mismatch(expected.tensors, actual.tensors)
        raise RunModelError(f"{what} does not match the receipt: first mismatching tensor {bad}")


def load_original(store, rm: RunModel) -> ModelBundle:
    """The model the run started from, checked against the receipt's original hash."""
    if rm.parent_run_id:
        bundle = materialize(store, rm.parent_run_id)
    else:
        if not rm.base_model or not Path(rm.base_model).exists():
            raise RunModelError(f"the original model of run {rm.run_id} is no longer at {rm.base_model}")
        bundle = load_model(rm.base_model, dtype=resolve_compute("cpu", rm.dtype)[1])
    check_weights(
        bundle.model, rm.original, f"the original model of run {rm.run_id} ({rm.base_model or rm.parent_run_id})"
    )
    return bundle


def materialize(store, run_id: str) -> ModelBundle:
    """The unlearned model of ``run_id``: its original (itself rebuilt when the run was chained)
    plus its delta, checked bit for bit against the receipt."""
    rm = get_run_model(store, run_id)
    delta = load_run_delta(rm)
    bundle = load_original(store, rm)
    apply_delta(bundle.model.state_dict(), delta)
    check_weights(bundle.model, rm.unlearned, f"the rebuilt model of run {run_id}")
    bundle.meta = {**bundle.meta, "unlearned_by": run_id}
    bundle.name = f"{bundle.name}-unlearned-{run_id}"
    bundle.path = f"run:{run_id}"
    bundle.model_hash = rm.unlearned.root[:16]
    return bundle


def record_run_model(
    store,
    run_id: str,
    *,
    state_before: dict[str, torch.Tensor],
    model: torch.nn.Module,
    source: dict,
    receipt_fields: dict,
    keep_files: bool = True,
) -> dict:
    """Hash the weights before and after, write the delta (when ``keep_files``) and the receipt,
    and store the receipt row. ``source``: ``{"model": path}`` or ``{"run": parent_run_id}``;
    ``receipt_fields``: the rest of ``receipt.build_receipt``'s arguments."""
    live = model.state_dict()
    aliases = tied_aliases(live)  # a tied tensor is stored in the delta under its first name only
    after = {k: v.detach().to("cpu") for k, v in live.items()}
    original, unlearned = hash_state(state_before), hash_state(after)
    run = store.get_run(run_id)

    def receipt_for(delta_info):  # signed, and pinning the audit log as it stands before run_done
        receipt = build_receipt(
            run=run, original=original, unlearned=unlearned, source=source, delta_info=delta_info, **receipt_fields
        )
        return sign_document(receipt | {"audit_chain_head": store.audit_chain_head()})

    files_dir, files_bytes = None, None
    if keep_files:
        delta = compute_delta(*({k: v for k, v in s.items() if k not in aliases} for s in (state_before, after)))
        meta = {"run_id": run_id, "original_root": original.root, "unlearned_root": unlearned.root}
        receipt, final, files_bytes = write_run_files(run_id, delta, meta, receipt_for)
        files_dir = str(final)
    else:
        receipt = receipt_for(None)
    store.save_run_model(
        {
            "run_id": run_id,
            "parent_run_id": source.get("run"),
            "base_model": source.get("model"),
            "original_root": original.root,
            "unlearned_root": unlearned.root,
            "receipt_sha256": receipt_sha256(receipt),
            "receipt_json": canonical_json(receipt),
            "files_dir": files_dir,
            "files_bytes": files_bytes,
        }
    )
    return receipt


@dataclass
class Verdict:
    matches: str  # "original", "unlearned" or "none"
    root: str
    first_mismatch: str | None  # vs the unlearned weights, when it matches neither

    def line(self, run_id: str) -> str:
        if self.matches == "none":
            what = f"first mismatching tensor {self.first_mismatch}"
            return f"matches neither model of run {run_id}: {what} (root {self.root[:16]})"
        return f"matches the {self.matches} model of run {run_id} (root {self.root[:16]})"


def verify_path(store, run_id: str, path: str | Path) -> Verdict:
    """Hash a model directory or GGUF file and say which of the run's two models it is."""
    rm = get_run_model(store, run_id)
    bundle = load_model(path, dtype=resolve_compute("cpu", rm.dtype)[1])
    actual = hash_state(bundle.model.state_dict())
    if actual.root == rm.unlearned.root:
        return Verdict("unlearned", actual.root, None)
    if actual.root == rm.original.root:
        return Verdict("original", actual.root, None)
    return Verdict("none", actual.root, first_mismatch(rm.unlearned.tensors, actual.tensors))


def rollback(store, run_id: str, source: str | Path | None = None) -> ModelBundle:
    """The original weights of ``run_id`` computed from its unlearned model (``source``, a model
    directory or GGUF file someone deployed; default: rebuilt from the run's files) and the delta,
    checked against the receipt's original hash."""
    rm = get_run_model(store, run_id)
    delta = load_run_delta(rm)
    if source is None:
        bundle = materialize(store, run_id)
    else:
        bundle = load_model(source, dtype=resolve_compute("cpu", rm.dtype)[1])
        check_weights(bundle.model, rm.unlearned, f"{source}")
    apply_delta(bundle.model.state_dict(), delta, reverse=True)
    check_weights(bundle.model, rm.original, f"the rolled-back model of run {run_id}")
    bundle.name, bundle.path = f"rollback-of-{run_id}", f"rollback:{run_id}"
    bundle.model_hash = rm.original.root[:16]
    return bundle


def delete_run_files(store, run_id: str, actor: str, *, force: bool = False) -> int:
    """Delete a run's model files (the receipt, metrics and hashes remain); returns bytes freed.
    Refused while a later run starts from this one's model, unless ``force``; and for a role
    that may not export models (``PermissionDenied``)."""
    require(store, actor, "export_model")
    rm = get_run_model(store, run_id)
    if rm.files_deleted or not rm.files_dir:
        raise RunModelError(f"run {run_id} has no model files to delete")
    children = store.child_run_models(run_id)
    if children and not force:
        raise RunModelError(
            f"run(s) {', '.join(children)} start from this run's model and need its files; delete them first or force"
        )
    freed = int(rm.files_bytes or 0)
    shutil.rmtree(rm.files_dir, ignore_errors=True)
    store.mark_model_files_deleted(run_id, actor, {"bytes": freed, "dir": rm.files_dir, "forced_over": children})
    return freed


def lineage(store, run_id: str) -> list[dict]:
    """The chain from the original model to ``run_id``: [{"model": path, "root": ...},
    {"run": id1, "root": ...}, ...], oldest first."""
    chain = []
    rm = get_run_model(store, run_id)
    while True:
        chain.append({"run": rm.run_id, "root": rm.unlearned.root, "forget": rm.receipt.get("forget_concepts")})
        if not rm.parent_run_id:
            chain.append({"model": rm.base_model, "root": rm.original.root})
            return chain[::-1]
        rm = get_run_model(store, rm.parent_run_id)
