"""Structural rules of the code base, checked from the source alone (AST + tokenize; nothing is imported).

The rules (docs/architecture.md, "Layering"):
  * no import cycle among ``hdsu_core`` modules, counting module-level imports (those that run when the
    module is imported: not the ones inside functions, not ``if TYPE_CHECKING:`` blocks);
  * no function or method in ``hdsu_core`` longer than ``MAX_FUNCTION_LINES`` lines (``def`` to last line);
  * an ``import`` inside a function in ``hdsu_core`` carries a ``# lazy: <reason>`` comment on its line
    (a heavy optional dependency, loaded only when needed);
  * ``hdsu_core`` never imports streamlit;
  * pages contain no SQL (the store is the only module with SQL).

Each checker is a plain function over a directory, so the self-tests at the bottom run it on a small package
planted in ``tmp_path`` and show that it catches a violation (the rules cannot pass vacuously).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from functools import lru_cache
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "hdsu_core"
MAX_FUNCTION_LINES = 80
LAZY_RE = re.compile(r"#\s*lazy:\s*\S")  # "# lazy: <reason>": the reason is required
SQL_RE = re.compile(r"\bSELECT\s|\bINSERT\s+INTO\b|\bDELETE\s+FROM\b|\bCREATE\s+TABLE\b")

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


# ---- parsing -----------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _source(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(_source(path), filename=str(path))


@lru_cache(maxsize=None)
def _comments(path: Path) -> dict[int, str]:
    """Line number -> the comment on that line (real comments only, not ``#`` inside strings)."""
    out: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(_source(path)).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string
    return out


def _rel(path: Path) -> str:
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def package_files(pkg_dir: Path) -> list[Path]:
    return sorted(p for p in pkg_dir.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path, pkg_dir: Path, pkg_name: str) -> str:
    parts = [pkg_name, *path.relative_to(pkg_dir).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: module body, class bodies, if / try / with blocks;
    not function bodies, not ``if TYPE_CHECKING:`` blocks."""
    out: list[ast.Import | ast.ImportFrom] = []

    def walk(stmts: list[ast.stmt]) -> None:
        for st in stmts:
            if isinstance(st, (ast.Import, ast.ImportFrom)):
                out.append(st)
            elif isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            elif isinstance(st, ast.If):
                if not _is_type_checking(st.test):
                    walk(st.body)
                walk(st.orelse)
            elif isinstance(st, ast.ClassDef):
                walk(st.body)
            elif isinstance(st, (ast.Try, ast.TryStar)):
                walk(st.body)
                for h in st.handlers:
                    walk(h.body)
                walk(st.orelse)
                walk(st.finalbody)
            elif isinstance(st, (ast.With, ast.AsyncWith, ast.For, ast.AsyncFor, ast.While)):
                walk(st.body)
                walk(getattr(st, "orelse", []))
            elif isinstance(st, ast.Match):
                for case in st.cases:
                    walk(case.body)

    walk(tree.body)
    return out


# ---- import graph ------------------------------------------------------------------------------


def _known(name: str, modules: set[str]) -> str | None:
    """The module itself, else its nearest enclosing known package (``import pkg.a.b`` where only pkg.a is ours)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def resolve_import(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, modules: set[str]) -> set[str]:
    """The package modules an import statement in module ``importer`` loads (``from x import y`` counts as x.y
    when y is a submodule, else as x)."""
    if isinstance(node, ast.Import):
        return {m for a in node.names if (m := _known(a.name, modules))}
    if node.level:
        base = importer.split(".")
        if not is_package:
            base = base[:-1]  # a plain module's relative imports start from its package
        base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    out: set[str] = set()
    for a in node.names:
        sub = f"{target}.{a.name}"
        if a.name != "*" and sub in modules:
            out.add(sub)
        elif m := _known(target, modules):
            out.add(m)
    return out


def all_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, also those inside functions (lazy ones)."""
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def import_graph(pkg_dir: Path, pkg_name: str = PACKAGE, *, lazy: bool = False) -> nx.DiGraph:
    """Module -> module edges of the module-level imports inside the package (with ``lazy``, of
    every import, also inside functions); each edge keeps the lines."""
    files = {module_name(p, pkg_dir, pkg_name): p for p in package_files(pkg_dir)}
    modules = set(files)
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for mod, path in files.items():
        for node in (all_imports if lazy else module_level_imports)(_tree(path)):
            for target in resolve_import(node, mod, path.name == "__init__.py", modules):
                if target != mod:
                    g.add_edge(mod, target)
                    g.edges[mod, target].setdefault("lines", []).append(f"{_rel(path)}:{node.lineno}")
    return g


def import_cycles(pkg_dir: Path, pkg_name: str = PACKAGE, limit: int = 50) -> list[list[str]]:
    """Elementary import cycles, shortest first, each rotated to start at its smallest module name."""
    cycles = []
    for i, c in enumerate(nx.simple_cycles(import_graph(pkg_dir, pkg_name))):
        if i >= limit:
            break
        k = c.index(min(c))
        cycles.append(c[k:] + c[:k])
    return sorted(cycles, key=lambda c: (len(c), c))


def _cycle_text(g: nx.DiGraph, cycle: list[str]) -> str:
    hops = []
    for a, b in zip(cycle, cycle[1:] + cycle[:1]):
        hops.append(f"{a} -> {b} ({', '.join(g.edges[a, b]['lines'])})")
    return "  cycle: " + " -> ".join([*cycle, cycle[0]]) + "\n" + "\n".join(f"      {h}" for h in hops)


# ---- layers ------------------------------------------------------------------------------------

# The layer of each top-level module or package of hdsu_core (docs/architecture.md, "Layering"):
# a module imports only modules of its own layer or below, lazily or not.
LAYERS = {
    **dict.fromkeys(
        [
            "paths",
            "datasets",
            "hierarchy",
            "icd10",
            "demo_kb",
            "store",
            "metrics",
            "fmt",
            "audit_chain",
            "attack_targets",
        ],
        0,
    ),
    **dict.fromkeys(["tagging", "security"], 1),
    **dict.fromkeys(
        ["compute", "progress", "weight_hashes", "liveness", "interrupts", "distributed", "efficiency", "model_zoo"], 2
    ),
    "encoding": 3,
    "losses": 4,
    "probes": 5,
    **dict.fromkeys(["models", "lora", "sharding", "private_training"], 6),
    "training": 7,
    "demo_model": 8,
    **dict.fromkeys(["methods", "artifacts", "attacks"], 9),
    "engine": 10,
    **dict.fromkeys(
        ["lifecycle", "jobs", "ranks", "audit", "bench", "bench_jobs", "workspace", "demo_status", "run_estimate"], 11
    ),
    **dict.fromkeys(
        ["cli", "cli_common", "cli_engine", "cli_audit", "cli_models", "cli_runs", "cli_security", "__main__"], 12
    ),
    "dashboard": 13,
}


def layer_violations(g: nx.DiGraph, layers: dict[str, int], pkg_name: str = PACKAGE) -> list[str]:
    """Imports from a lower layer up to a higher one, and modules no layer is given for."""

    def layer(module: str) -> int | None:
        parts = module.split(".")
        return -1 if len(parts) == 1 else layers.get(parts[1])  # the package __init__ sits below all

    out = [f"{m}: no layer (add it to LAYERS and docs/architecture.md)" for m in sorted(g.nodes) if layer(m) is None]
    for a, b in sorted(g.edges):
        la, lb = layer(a), layer(b)
        if la is not None and lb is not None and lb > la:
            out.append(f"{a} (layer {la}) imports {b} (layer {lb}) at {', '.join(g.edges[a, b]['lines'])}")
    return out


# ---- per-function rules ------------------------------------------------------------------------


def _functions(tree: ast.AST) -> list[FunctionNode]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def long_functions(pkg_dir: Path, max_lines: int = MAX_FUNCTION_LINES) -> list[tuple[str, str, int]]:
    """(file:line, qualified-ish name, length) of every function longer than max_lines, longest first."""
    out = []
    for path in package_files(pkg_dir):
        tree = _tree(path)
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for fn in _functions(tree):
            length = (fn.end_lineno or fn.lineno) - fn.lineno + 1  # `def` line to last line (decorators excluded)
            if length > max_lines:
                names, node = [fn.name], parents.get(fn)
                while node is not None:
                    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                        names.insert(0, node.name)
                    node = parents.get(node)
                out.append((f"{_rel(path)}:{fn.lineno}", ".".join(names), length))
    return sorted(out, key=lambda t: (-t[2], t[0]))


def unmarked_function_imports(pkg_dir: Path) -> list[tuple[str, str]]:
    """(file:line, source) of every import inside a function whose lines carry no ``# lazy: <reason>`` comment."""
    out = []
    for path in package_files(pkg_dir):
        tree, comments = _tree(path), _comments(path)
        lines = _source(path).splitlines()
        seen: set[int] = set()
        for fn in _functions(tree):
            for node in ast.walk(fn):
                if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in seen:
                    continue
                seen.add(node.lineno)  # nested functions are walked twice
                span = range(node.lineno, (node.end_lineno or node.lineno) + 1)
                if not any(LAZY_RE.search(comments.get(ln, "")) for ln in span):
                    out.append((f"{_rel(path)}:{node.lineno}", lines[node.lineno - 1].strip()))
    return sorted(out, key=lambda t: (t[0].split(":")[0], int(t[0].split(":")[1])))


def streamlit_imports(pkg_dir: Path) -> list[str]:
    """file:line of every import of streamlit (anywhere, also inside functions or via importlib)."""
    out = []
    for path in package_files(pkg_dir):
        for node in ast.walk(_tree(path)):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                func = node.func
                fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if fname in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                    names = [node.args[0].value]
            if any(n == "streamlit" or n.startswith("streamlit.") for n in names):
                out.append(f"{_rel(path)}:{node.lineno}")
    return out


def sql_in_views(paths: list[Path]) -> list[str]:
    """file:line of SQL in view code: ``.execute(`` calls, SQL string literals, duckdb imports."""
    out: list[tuple[int, str]] = []
    for path in paths:
        for node in ast.walk(_tree(path)):
            what = ""
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "execute":
                what = ".execute(...)"
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_RE.search(node.value):
                what = f"SQL string {node.value.strip()[:40]!r}"
            elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "duckdb" for a in node.names):
                what = "import duckdb"
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "duckdb":
                what = "from duckdb import ..."
            if what:
                out.append((getattr(node, "lineno", 0), f"{_rel(path)}:{getattr(node, 'lineno', 0)}: {what}"))
    return [text for _, text in sorted(out, key=lambda t: (t[1].split(":")[0], t[0]))]


# ---- the rules on this code base ---------------------------------------------------------------

PKG_DIR = ROOT / PACKAGE


def test_no_import_cycles():
    g = import_graph(PKG_DIR)
    cycles = import_cycles(PKG_DIR)
    assert not cycles, f"{len(cycles)} import cycle(s) among {PACKAGE} modules (module-level imports):\n" + "\n".join(
        _cycle_text(g, c) for c in cycles
    )


def test_imports_run_down_the_layers():
    offenders = layer_violations(import_graph(PKG_DIR, lazy=True), LAYERS)
    assert not offenders, "imports against the layering (docs/architecture.md):\n" + "\n".join(
        f"  {o}" for o in offenders
    )


def test_functions_are_short():
    offenders = long_functions(PKG_DIR)
    assert not offenders, (
        f"{len(offenders)} function(s) in {PACKAGE} longer than {MAX_FUNCTION_LINES} lines (def to last line):\n"
        + "\n".join(f"  {where}  {name}  {n} lines" for where, name, n in offenders)
    )


def test_imports_inside_functions_are_marked_lazy():
    offenders = unmarked_function_imports(PKG_DIR)
    assert not offenders, (
        f"{len(offenders)} import(s) inside functions in {PACKAGE} without a '# lazy: <reason>' comment on the line"
        " (import at module level, or mark a heavy optional dependency):\n"
        + "\n".join(f"  {where}  {src}" for where, src in offenders)
    )


def test_engine_never_imports_streamlit():
    offenders = streamlit_imports(PKG_DIR)
    assert not offenders, f"{PACKAGE} must never import streamlit: " + ", ".join(offenders)


def test_pages_contain_no_sql():
    views = sorted((ROOT / "pages").glob("*.py")) + [ROOT / "app.py"]
    offenders = sql_in_views(views)
    assert not offenders, "SQL in pages (use hdsu_core.store):\n" + "\n".join(f"  {o}" for o in offenders)


def test_graph_covers_the_package():
    """Guards the real-tree tests against a silently empty scan."""
    g = import_graph(PKG_DIR)
    assert {f"{PACKAGE}.paths", f"{PACKAGE}.store", f"{PACKAGE}.engine"} <= set(g.nodes)
    assert g.number_of_edges() > 10


# ---- self-tests: each checker catches a planted violation --------------------------------------


def _plant(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / "pkg" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return root / "pkg"


def test_cycle_finder_catches_a_planted_cycle(tmp_path):
    pkg = _plant(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from pkg.b import thing\n",
            "b.py": "from . import c\n",
            "c.py": "import pkg.a\n",
            "d.py": "import pkg.a\n",  # into the cycle, not part of it
        },
    )
    assert import_cycles(pkg, "pkg") == [["pkg.a", "pkg.b", "pkg.c"]]
    g = import_graph(pkg, "pkg")
    assert "pkg/b.py:1" in _cycle_text(g, ["pkg.a", "pkg.b", "pkg.c"])


def test_layer_checker_catches_an_upward_lazy_import(tmp_path):
    pkg = _plant(
        tmp_path,
        {
            "__init__.py": "",
            "low.py": "def f():\n    from pkg import high  # lazy: planted\n",
            "high.py": "from pkg import low\n",
            "stray.py": "",
        },
    )
    layers = {"low": 0, "high": 1}
    assert layer_violations(import_graph(pkg, "pkg"), layers) == [
        "pkg.stray: no layer (add it to LAYERS and docs/architecture.md)"
    ]
    found = layer_violations(import_graph(pkg, "pkg", lazy=True), layers)
    assert len(found) == 2 and found[1].startswith("pkg.low (layer 0) imports pkg.high (layer 1) at ")
    assert found[1].endswith("pkg/low.py:2")


def test_cycle_finder_resolution_rules(tmp_path):
    pkg = _plant(
        tmp_path,
        {
            "__init__.py": "from pkg import sub\n",  # a package importing its submodules: fine without a cycle
            "sub/__init__.py": "from . import x, y\nfrom .x import helper\n",
            "sub/x.py": "from pkg.sub.y import Y\nfrom ..top import T\n",
            "sub/y.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub.x import X\n",
            "top.py": "def f():\n    from pkg.sub import x  # lazy: in a function, not a module-level edge\n",
        },
    )
    g = import_graph(pkg, "pkg")
    assert set(g.edges) == {
        ("pkg", "pkg.sub"),
        ("pkg.sub", "pkg.sub.x"),
        ("pkg.sub", "pkg.sub.y"),
        ("pkg.sub.x", "pkg.sub.y"),
        ("pkg.sub.x", "pkg.top"),
    }
    assert import_cycles(pkg, "pkg") == []
    # The same import at module level closes a cycle: pkg.sub.x -> pkg.top -> pkg.sub.x.
    (pkg / "top.py").write_text("from pkg.sub import x\n", encoding="utf-8")
    _tree.cache_clear()
    _source.cache_clear()
    assert import_cycles(pkg, "pkg") == [["pkg.sub.x", "pkg.top"]]


def test_length_checker_catches_a_long_function(tmp_path):
    body_80 = "".join(f"    x{i} = {i}\n" for i in range(79))  # def + 79 lines = 80: allowed
    body_81 = "".join(f"        y{i} = {i}\n" for i in range(80))  # def + 80 lines = 81: too long
    text = f"import functools\n\n\n@functools.cache\ndef ok():\n{body_80}\n\nclass C:\n    def long(self):\n{body_81}"
    pkg = _plant(tmp_path, {"m.py": text})  # ok: lines 5-84 (decorator not counted); C.long: lines 88-168
    assert long_functions(pkg) == [(f"{_rel(pkg / 'm.py')}:88", "C.long", 81)]
    assert long_functions(pkg, max_lines=79) == [
        (f"{_rel(pkg / 'm.py')}:88", "C.long", 81),
        (f"{_rel(pkg / 'm.py')}:5", "ok", 80),
    ]


def test_lazy_import_checker(tmp_path):
    pkg = _plant(
        tmp_path,
        {
            "m.py": (
                "import os\n"
                "def f():\n"
                "    import torch  # lazy: heavy, only for training\n"
                "    from transformers import (  # lazy: heavy\n"
                "        AutoModel,\n"
                "    )\n"
                "    import json\n"
                "    import re  # lazy\n"
                "    s = '# lazy: not a comment'; import csv\n"
                "    def g():\n"
                "        import gguf\n"
                "class K:\n"
                "    def m(self):\n"
                "        from pkg import x  # LAZY: wrong case\n"
            )
        },
    )
    where = _rel(pkg / "m.py")
    assert unmarked_function_imports(pkg) == [
        (f"{where}:7", "import json"),
        (f"{where}:8", "import re  # lazy"),
        (f"{where}:9", "s = '# lazy: not a comment'; import csv"),
        (f"{where}:11", "import gguf"),
        (f"{where}:14", "from pkg import x  # LAZY: wrong case"),
    ]


def test_streamlit_checker(tmp_path):
    pkg = _plant(
        tmp_path,
        {
            "a.py": "import streamlit as st\n",
            "b.py": "def f():\n    from streamlit.runtime import exists  # lazy: x\n",
            "c.py": "import importlib\nst = importlib.import_module('streamlit')\n",
            "d.py": "import streamlit_extras_not_streamlit\nfrom . import streamlit\n",  # not streamlit itself
        },
    )
    assert streamlit_imports(pkg) == [f"{_rel(pkg / 'a.py')}:1", f"{_rel(pkg / 'b.py')}:2", f"{_rel(pkg / 'c.py')}:2"]


def test_sql_checker(tmp_path):
    pkg = _plant(
        tmp_path,
        {
            "ok.py": "st.write('Select a concept')\nstore.list_runs()\n",
            "bad.py": "con.execute('x')\nq = 'SELECT * FROM runs'\nimport duckdb\n",
        },
    )
    assert sql_in_views([pkg / "ok.py"]) == []
    assert [o.split(": ", 1)[0] for o in sql_in_views([pkg / "bad.py"])] == [
        f"{_rel(pkg / 'bad.py')}:{n}" for n in (1, 2, 3)
    ]
