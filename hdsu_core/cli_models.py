"""Model commands of the CLI: what a run hands back and how to check it.

    model list                         the original models and their unlearned descendants
    model receipt RUN_ID               the run's receipt (JSON)
    model export RUN_ID --format hf|gguf --out PATH
    model verify RUN_ID PATH           which of the run's models a directory / GGUF file is
    model rollback RUN_ID --out DIR [--from PATH]
    model delete RUN_ID [--force]      delete the run's model files; the receipt stays

Errors are one line (``RunModelError`` is a ``ValueError``); ``verify`` exits 1 when the file
matches neither model.
"""

from __future__ import annotations

import json

from hdsu_core.cli_common import Parser
from hdsu_core.security.roles import cli_actor


def _store(db):
    from hdsu_core.store import Store  # lazy: duckdb and pandas slow the start of every command

    return Store(db)


def _actor(a) -> str:
    return cli_actor(_store(a.db), a.actor)


def cmd_model_list(a) -> int:
    from hdsu_core.artifacts.lineage_view import model_tree_lines  # lazy: torch

    for line in model_tree_lines(_store(a.db)):
        print(line)
    return 0


def cmd_model_receipt(a) -> int:
    from hdsu_core.artifacts.run_models import get_run_model  # lazy: torch

    print(json.dumps(get_run_model(_store(a.db), a.run_id).receipt, indent=1, sort_keys=True))
    return 0


def cmd_model_export(a) -> int:
    from hdsu_core.artifacts.actions import export_run_model  # lazy: torch

    out = export_run_model(_store(a.db), a.run_id, a.format, a.out, actor=_actor(a))
    print(out)
    return 0


def cmd_model_verify(a) -> int:
    from hdsu_core.artifacts.actions import verify_model  # lazy: torch

    verdict = verify_model(_store(a.db), a.run_id, a.path, actor=_actor(a))
    print(verdict.line(a.run_id))
    return 0 if verdict.matches != "none" else 1


def cmd_model_rollback(a) -> int:
    from hdsu_core.artifacts.actions import rollback_run_model  # lazy: torch

    out = rollback_run_model(_store(a.db), a.run_id, a.out, source=a.source, actor=_actor(a))
    print(out)
    return 0


def cmd_model_delete(a) -> int:
    from hdsu_core.artifacts.run_models import delete_run_files  # lazy: torch

    freed = delete_run_files(_store(a.db), a.run_id, _actor(a), force=a.force)
    print(f"deleted the model files of {a.run_id} ({freed:,} bytes); its receipt remains")
    return 0


def _common(x) -> None:
    x.add_argument("--db", help="DuckDB file (default var/hdsu.duckdb or $HDSU_DB)")
    x.add_argument("--actor", help="who is acting (default: the OS user; another name only in demo mode)")


def register(sub) -> None:
    mp = sub.add_parser("model", help="export, verify, roll back and list the unlearned models of runs")
    ms = mp.add_subparsers(dest="sub", required=True, parser_class=Parser)
    x = ms.add_parser("list", help="original models and their unlearned descendants")
    _common(x)
    x.set_defaults(fn=cmd_model_list)
    x = ms.add_parser("receipt", help="print a run's receipt")
    x.add_argument("run_id")
    _common(x)
    x.set_defaults(fn=cmd_model_receipt)
    x = ms.add_parser("export", help="write a run's unlearned model (Hugging Face directory or GGUF file)")
    x.add_argument("run_id")
    x.add_argument("--format", choices=("hf", "gguf"), default="hf")
    x.add_argument("--out", required=True, help="output directory (hf) or .gguf file")
    _common(x)
    x.set_defaults(fn=cmd_model_export)
    x = ms.add_parser("verify", help="which of a run's models (original / unlearned) a model directory or GGUF file is")
    x.add_argument("run_id")
    x.add_argument("path")
    _common(x)
    x.set_defaults(fn=cmd_model_verify)
    x = ms.add_parser("rollback", help="write a run's original weights, from its unlearned model and its delta")
    x.add_argument("run_id")
    x.add_argument("--out", required=True, help="output directory (Hugging Face format)")
    x.add_argument("--from", dest="source", help="the unlearned model to roll back (default: rebuilt from the run)")
    _common(x)
    x.set_defaults(fn=cmd_model_rollback)
    x = ms.add_parser("delete", help="delete a run's model files (its receipt, metrics and hashes remain)")
    x.add_argument("run_id")
    x.add_argument("--force", action="store_true", help="also when later runs start from this run's model")
    _common(x)
    x.set_defaults(fn=cmd_model_delete)
