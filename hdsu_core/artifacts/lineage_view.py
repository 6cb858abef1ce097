"""The Models view (CLI ``model list`` and the dashboard's Models page): each original model and
its unlearned descendants as a tree, oldest first, with hashes, sizes and what each run forgot."""

from __future__ import annotations


def _size(n) -> str:
    if n is None or n != n:
        return "-"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"  # pragma: no cover


def _files(r: dict) -> str:
    if r.get("files_deleted_at") is not None and r.get("files_deleted_at") == r.get("files_deleted_at"):
        return "deleted"
    if not r.get("files_dir") or r.get("files_dir") != r.get("files_dir"):
        return "not kept"
    return _size(r.get("files_bytes"))


def model_tree(store) -> list[dict]:
    """One row per node, depth-first: originals (depth 0) then the runs built on each (depth 1, 2...)."""
    df = store.list_run_models()
    rows = df.to_dict("records") if not df.empty else []
    children: dict[str, list[dict]] = {}
    originals: dict[str, dict] = {}
    for r in rows:
        parent = r.get("parent_run_id")
        if isinstance(parent, str) and parent:
            children.setdefault(parent, []).append(r)
        else:
            key = r["original_root"]
            originals.setdefault(key, {"root": key, "model": r.get("base_model"), "runs": []})["runs"].append(r)
    out: list[dict] = []

    def walk(r: dict, depth: int) -> None:
        out.append(
            {
                "depth": depth,
                "kind": "unlearned",
                "run_id": r["run_id"],
                "model": "",
                "method": r.get("method"),
                "forgot": ", ".join(r.get("forget_concepts") or []),
                "root": r["unlearned_root"][:16],
                "files": _files(r),
                "author": r.get("author"),
            }
        )
        for c in children.get(r["run_id"], []):
            walk(c, depth + 1)

    for key, o in originals.items():
        out.append(
            {
                "depth": 0,
                "kind": "original",
                "run_id": "",
                "model": o["model"],
                "method": "",
                "forgot": "",
                "root": key[:16],
                "files": "",
                "author": "",
            }
        )
        for r in o["runs"]:
            walk(r, 1)
    return out


def model_tree_lines(store) -> list[str]:
    tree = model_tree(store)
    if not tree:
        return ["no unlearned models yet (every finished run adds one)"]
    lines = []
    for n in tree:
        pad = "  " * n["depth"]
        if n["kind"] == "original":
            lines.append(f"{n['model']}  [{n['root']}]")
        else:
            lines.append(
                f"{pad}└ {n['run_id']}  {n['method']} forgot {n['forgot'] or '-'}  [{n['root']}]  files: {n['files']}"
            )
    return lines


def start_candidates(store, dataset: str) -> dict[str, str]:
    """Runs on ``dataset`` whose unlearned model a new run can start from (files kept and not
    deleted), newest first: run id -> label."""
    df = store.list_run_models()
    out: dict[str, str] = {}
    for r in reversed(df.to_dict("records") if not df.empty else []):
        if r.get("dataset") != dataset or _files(r) in ("deleted", "not kept"):
            continue
        forgot = ", ".join(r.get("forget_concepts") or []) or "-"
        out[r["run_id"]] = f"run {r['run_id']} ({r.get('method')}, forgot {forgot})"
    return out
