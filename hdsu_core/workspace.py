"""The shared, versioned hierarchy that the team edits: load the working copy, save a new version
(with its audit event), merge an imported branch, read and write hierarchy JSON.

Everything persistent goes through :class:`hdsu_core.store.Store`; the pages call these and keep
only the session state.
"""

from __future__ import annotations

import json

from hdsu_core.hierarchy import (
    Hierarchy,
    HierarchyError,
    Violation,
    diff_summary,
    load_default,
    parse_document,
    slugify,
)
from hdsu_core.security.roles import require
from hdsu_core.store import Store


# ---------------------------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------------------------
def load_working(store: Store) -> tuple[Hierarchy, int | None]:
    """Latest stored hierarchy version, or data/hierarchy.json when none is stored yet."""
    latest = store.latest_hierarchy_version()
    if latest is None:
        return load_default(), None
    return Hierarchy.from_dict(latest["hierarchy"]), int(latest["version_id"])


def base_hierarchy(store: Store, version: int | None) -> Hierarchy:
    """A stored version, or data/hierarchy.json for ``None``."""
    if version is None:
        return load_default()
    return Hierarchy.from_dict(store.get_hierarchy_version(version)["hierarchy"])


def _conflict(base_version: int | None, latest: dict | None) -> str:
    latest_id = None if latest is None else int(latest["version_id"])
    started = "the default file" if base_version is None else f"version {base_version}"
    return (
        f"The hierarchy changed since you loaded it (you started from {started}, latest is version "
        f"{latest_id} by {latest['author'] if latest else '?'}). Reload to get the latest version, then redo your edit."
    )


def save_hierarchy(store: Store, working: Hierarchy, base_version: int | None, author: str, message: str) -> dict:
    """Optimistic concurrency: save a new version only if nobody saved since ``base_version``.
    Returns {"ok", "version", "diff", "summary", "error"}; logs an audit event on success.
    ``PermissionDenied`` when the author's role may not edit the hierarchy."""
    require(store, author or "anonymous", "edit_hierarchy")
    latest = store.latest_hierarchy_version()
    latest_id = None if latest is None else int(latest["version_id"])
    if latest_id != base_version:
        return {
            "ok": False,
            "version": latest_id,
            "diff": None,
            "summary": "",
            "error": _conflict(base_version, latest),
        }
    diff = base_hierarchy(store, base_version).diff(working)
    summary = diff_summary(diff)
    if summary == "no changes" and base_version is not None:
        return {
            "ok": False,
            "version": latest_id,
            "diff": diff,
            "summary": summary,
            "error": "Nothing to save: no changes.",
        }
    author = author or "anonymous"
    vid = store.save_hierarchy_version(working.to_dict(), author=author, message=message or summary, diff=diff)
    store.log_event(author, "save_hierarchy", None, {"version": vid, "message": message, "summary": summary})
    return {"ok": True, "version": vid, "diff": diff, "summary": summary, "error": None}


# ---------------------------------------------------------------------------------------------
# Imports into the working copy
# ---------------------------------------------------------------------------------------------
def merge_branch(h: Hierarchy, branch: Hierarchy, mode: str = "add") -> Hierarchy:
    """``add``: graft the imported branch into a copy of ``h`` (concepts already present, e.g. a
    shared ICD-10 chapter, are kept as they are); ``replace``: the branch replaces its existing
    counterpart (same ids are overwritten, the old subtree under the imported roots is removed).
    Raises HierarchyError with every violation."""
    if mode not in ("add", "replace"):
        raise HierarchyError(f"unknown import mode {mode!r}")
    data = h.to_dict()
    concepts = data["concepts"]
    if mode == "replace":
        drop = {c.id for c in branch.concepts()}
        for r in branch.roots():
            if r in h:
                drop |= h.subtree(r)
        concepts = [c for c in concepts if c["id"] not in drop]
        concepts += [c.to_dict() for c in branch.concepts()]
    else:
        have = {c["id"] for c in concepts}
        concepts += [c.to_dict() for c in branch.concepts() if c.id not in have]
    data["concepts"] = concepts
    return Hierarchy.from_dict(data)


def import_icd10_branch(
    store: Store, h: Hierarchy, branch: Hierarchy, mode: str, *, actor: str, icd_range: str | None
) -> Hierarchy:
    """The working copy with an ICD-10 branch merged in (see :func:`merge_branch`); the import is
    recorded in the audit trail. Raises HierarchyError (nothing recorded) when the merge is invalid."""
    require(store, actor, "edit_hierarchy")
    merged = merge_branch(h, branch, mode)
    store.log_event(actor, "import_icd10", None, {"range": icd_range, "mode": mode, "concepts": len(branch)})
    return merged


def record_upload(store: Store, uploaded: Hierarchy, *, actor: str, file_name: str) -> Hierarchy:
    """Record in the audit trail that an uploaded hierarchy becomes the working copy; returns it."""
    require(store, actor, "edit_hierarchy")
    store.log_event(actor, "upload_hierarchy", None, {"file": file_name, "concepts": len(uploaded)})
    return uploaded


def new_concept_id(h: Hierarchy, name: str) -> str:
    """An id derived from the name that the hierarchy does not use yet (``name_2``, ``name_3``…)."""
    base = slugify(name)
    cid, i = base, 2
    while cid in h:
        cid, i = f"{base}_{i}", i + 1
    return cid


# ---------------------------------------------------------------------------------------------
# JSON import / export
# ---------------------------------------------------------------------------------------------
def parse_hierarchy_json(data: bytes | str) -> tuple[Hierarchy | None, list[Violation]]:
    """Validate an uploaded hierarchy document; returns (hierarchy, []) or (None, every violation)."""
    try:
        return Hierarchy.from_dict(parse_document(data, "upload")), []
    except HierarchyError as e:
        return None, e.violations


def hierarchy_json(h: Hierarchy) -> str:
    """The hierarchy as the JSON document users download (and can upload again)."""
    return json.dumps(h.to_dict(), indent=1, ensure_ascii=False) + "\n"


def run_hierarchy(store: Store, run: dict) -> Hierarchy | None:
    """The hierarchy version a run used (the default file when it names none); None when that
    version cannot be read."""
    v = run.get("hierarchy_version")
    try:
        return base_hierarchy(store, None if v is None or v != v else int(v))  # v != v: NaN from pandas
    except Exception:  # noqa: BLE001 - a missing or broken version: the caller picks the fallback
        return None
