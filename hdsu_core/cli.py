"""Command line: ``python -m hdsu_core ...``.

Errors the user can fix (unknown flag, missing file, bad value) print one line on stderr and exit
non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from hdsu_core import cli_audit, cli_engine, cli_models, cli_runs, cli_security, datasets
from hdsu_core.cli_common import CliError, Parser, emit
from hdsu_core.datasets import DatasetError
from hdsu_core.hierarchy import Hierarchy, HierarchyError, check_size, parse_document, validate_data
from hdsu_core.interrupts import interrupts
from hdsu_core.paths import DEFAULT_HIERARCHY
from hdsu_core.tagging import make_split


# ------------------------------------------------------------------------------------------------
# hierarchy
# ------------------------------------------------------------------------------------------------
def cmd_hierarchy_validate(a) -> int:
    path = Path(a.path)
    if not path.exists():
        raise CliError(f"hierarchy file not found: {path}")
    try:
        check_size(path.stat().st_size, str(path))
        data = parse_document(path.read_bytes(), str(path))
    except HierarchyError as e:  # too large, not UTF-8, not JSON, nested too deeply: one line
        print(str(e.violations[0]))
        return 1
    violations = validate_data(data)
    for v in violations:
        print(str(v))
    if not violations:
        print(f"{path}: valid ({len(data['concepts'])} concepts)", file=sys.stderr)
    return 1 if violations else 0


def cmd_hierarchy_show(a) -> int:
    h = Hierarchy.load(a.path or DEFAULT_HIERARCHY)
    counts = h.level_counts()
    info = {"name": h.name, "concepts": len(h), "levels": {str(k): v for k, v in counts.items()}, "roots": h.roots()}
    if a.json:
        emit(info, True)
    else:
        print(f"{h.name}: {len(h)} concepts")
        for cid in h.ordered_ids():
            c = h.concept(cid)
            if c.level <= a.depth:
                print(f"{'  ' * (c.level - 1)}L{c.level} {c.id}  {c.name}")
    return 0


def cmd_hierarchy_import(a) -> int:
    from hdsu_core.icd10 import import_branch  # lazy: simple_icd_10_cm takes seconds to import

    h = import_branch(a.range)
    h.save(a.out)
    print(
        json.dumps({"out": str(a.out), "concepts": len(h), "levels": {str(k): v for k, v in h.level_counts().items()}})
    )
    return 0


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def cmd_data_load(a) -> int:
    rep = datasets.load(a.kind, a.path)
    by_source: dict[str, int] = {}
    for it in rep.items:
        by_source[it.source] = by_source.get(it.source, 0) + 1
    info = {
        "path": str(a.path),
        "kind": a.kind,
        "items": len(rep.items),
        "skipped": len(rep.skipped),
        "repaired": rep.repaired,
        "sources": by_source,
        "skipped_rows": [{"row": s.row, "reason": s.reason} for s in rep.skipped[: a.show_skipped]],
    }
    if a.json:
        emit(info, True)
    else:
        print(f"{a.path}: {len(rep.items)} items, {len(rep.skipped)} skipped, {rep.repaired} repaired")
        for s in rep.skipped[: a.show_skipped]:
            print(f"  {s.file}:{s.row}: {s.reason}")
    return 0


def cmd_data_split(a) -> int:
    h = Hierarchy.load(a.hierarchy or DEFAULT_HIERARCHY)
    items = []
    for spec in a.dataset:
        items.extend(datasets.load_spec(spec).items)
    sp = make_split(items, h, a.forget.split(","), seed=a.seed, holdout_fraction=a.holdout)
    s = sp.summary()
    # forget / retain count every item on each side of the selection; the holdout is a part of
    # each that the model is never trained on (the non-members of membership-inference tests).
    info = {
        "forget": s["forget"] + s["holdout_forget"],
        "retain": s["retain"] + s["holdout_retain"],
        "forget_trained": s["forget"],
        "forget_holdout": s["holdout_forget"],
        "retain_trained": s["retain"],
        "retain_holdout": s["holdout_retain"],
        "holdout": s["holdout"],
        "untagged": s["untagged"],
        "selected": s["selected"],
        "targeted_concepts": len(sp.targeted),
        "seed": a.seed,
        "holdout_fraction": a.holdout,
        "per_concept": {k: v for k, v in sorted(sp.counts.items())},
    }
    if a.json:
        emit(info, True)
    else:
        print(
            f"forget {info['forget']} ({info['forget_holdout']} holdout)  retain {info['retain']} "
            f"({info['retain_holdout']} holdout)  untagged {info['untagged']}"
        )
        for k, v in info["per_concept"].items():
            if k in sp.targeted:
                print(f"  {k}: {v}")
    return 0


# ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="hdsu_core", description="HDSU Studio engine")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)

    hp = sub.add_parser("hierarchy", help="validate, show, import concept hierarchies")
    hs = hp.add_subparsers(dest="sub", required=True, parser_class=Parser)
    x = hs.add_parser("validate")
    x.add_argument("path")
    x.set_defaults(fn=cmd_hierarchy_validate)
    x = hs.add_parser("show")
    x.add_argument("path", nargs="?")
    x.add_argument("--json", action="store_true")
    x.add_argument("--depth", type=int, default=4)
    x.set_defaults(fn=cmd_hierarchy_show)
    x = hs.add_parser("import-icd10cm")
    x.add_argument("range", help='chapter, block or category, e.g. "F40-F48"')
    x.add_argument("--out", required=True, type=Path)
    x.set_defaults(fn=cmd_hierarchy_import)

    dp = sub.add_parser("data", help="load datasets and build splits")
    ds = dp.add_subparsers(dest="sub", required=True, parser_class=Parser)
    x = ds.add_parser("load")
    x.add_argument("kind", choices=datasets.KINDS)
    x.add_argument("path", type=Path)
    x.add_argument("--json", action="store_true")
    x.add_argument("--show-skipped", type=int, default=20)
    x.set_defaults(fn=cmd_data_load)
    x = ds.add_parser("split")
    x.add_argument("--hierarchy", type=Path)
    x.add_argument("--dataset", action="append", required=True, help="KIND:PATH (repeatable)")
    x.add_argument("--forget", required=True, help="concept ids, comma-separated")
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--holdout", type=float, default=0.2)
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_data_split)

    cli_engine.register(sub)  # run / bench / demo / worker
    cli_runs.register(sub)  # runs list / reap

    cli_audit.register(sub)  # audit report
    cli_models.register(sub)  # model list / receipt / export / verify / rollback / delete
    cli_security.register(sub)  # users add / list / disable
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        with interrupts():  # SIGINT / SIGTERM: a run in progress is marked cancelled, then one line
            return int(args.fn(args) or 0)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt as e:  # a run in progress is marked cancelled first (interrupts.py)
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"error: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    except Exception as e:
        if not isinstance(e, _user_errors()):
            raise
        msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        print(f"error: {msg}", file=sys.stderr)
        return 1


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors printed as one line, without a traceback. OSError: e.g. a directory given as a file.
    ``ModelError`` lives with torch: when ``hdsu_core.compute`` was never imported, no ModelError
    can have been raised, so it is looked up rather than imported (keeps torch out of commands
    such as ``hierarchy validate``); ``StoreError`` (database busy, full or not writable) likewise
    with duckdb."""
    compute, store = sys.modules.get("hdsu_core.compute"), sys.modules.get("hdsu_core.store")
    return (
        (HierarchyError, DatasetError, OSError, ValueError)
        + ((compute.ModelError,) if compute else ())
        + ((store.StoreError,) if store else ())
    )
