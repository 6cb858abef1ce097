"""The audited things a user does with a run's model: export it, verify a file against it, roll
it back. Each writes its audit event after it succeeded (a failed export leaves no event and no
file)."""

from __future__ import annotations

from pathlib import Path

from hdsu_core.artifacts.export import export, hf_zip_bytes
from hdsu_core.artifacts.receipt import canonical_json
from hdsu_core.artifacts.run_models import (
    Verdict,
    get_run_model,
    load_run_delta,
    materialize,
    rollback,
    verify_path,
)
from hdsu_core.security.roles import require
from hdsu_core.weight_hashes import file_sha256


def _export_meta(run_id: str, root: str) -> dict:
    return {"unlearned_by": run_id, "unlearned_root": root}


def export_run_model(store, run_id: str, fmt: str, out: str | Path, *, actor: str) -> Path:
    require(store, actor, "export_model")
    rm = get_run_model(store, run_id)
    bundle = materialize(store, run_id)
    path = export(bundle, fmt, out, _export_meta(run_id, rm.unlearned.root))
    store.log_event(actor, "model_export", run_id, {"format": fmt, "out": str(path), "root": rm.unlearned.root})
    return path


def model_zip(store, run_id: str, *, actor: str) -> bytes:
    """The unlearned model as a zipped Hugging Face directory (a dashboard download)."""
    require(store, actor, "export_model")
    rm = get_run_model(store, run_id)
    data = hf_zip_bytes(materialize(store, run_id), _export_meta(run_id, rm.unlearned.root))
    store.log_event(actor, "model_export", run_id, {"format": "hf-zip", "bytes": len(data), "root": rm.unlearned.root})
    return data


def delta_bytes(store, run_id: str, *, actor: str) -> bytes:
    """The run's delta file, checked against the receipt (a dashboard download)."""
    require(store, actor, "export_model")
    rm = get_run_model(store, run_id)
    load_run_delta(rm)  # refuses a missing or altered file
    path = Path(rm.files_dir or "") / rm.receipt["delta"]["file"]
    data = path.read_bytes()
    store.log_event(actor, "delta_export", run_id, {"sha256": file_sha256(path), "bytes": len(data)})
    return data


def verify_model(store, run_id: str, path: str | Path, *, actor: str) -> Verdict:
    verdict = verify_path(store, run_id, path)
    details = {"path": str(path), "matches": verdict.matches, "root": verdict.root}
    store.log_event(actor, "model_verify", run_id, details | {"first_mismatch": verdict.first_mismatch})
    return verdict


def rollback_run_model(store, run_id: str, out: str | Path, *, source: str | Path | None, actor: str) -> Path:
    require(store, actor, "export_model")
    rm = get_run_model(store, run_id)
    bundle = rollback(store, run_id, source)
    path = export(bundle, "hf", out, {"rolled_back_from": run_id, "root": rm.original.root})
    store.log_event(
        actor, "model_rollback", run_id, {"out": str(path), "from": str(source or "rebuilt"), "root": rm.original.root}
    )
    return path


def receipt_bytes(store, run_id: str, *, actor: str) -> bytes:
    """The run's receipt as JSON (a dashboard download), after checking it against its sha256."""
    rm = get_run_model(store, run_id)
    data = canonical_json(rm.receipt).encode()
    store.log_event(actor, "receipt_export", run_id, {"bytes": len(data)})
    return data
