"""Engine commands of the CLI: run, bench, demo, worker.

The engine modules import torch: they are imported inside the commands that use them, so that
``python -m hdsu_core hierarchy validate`` (and every other command) starts without it.
"""

from __future__ import annotations

import json
import sys

from hdsu_core.progress import ProgressFn, no_progress, stderr_progress
from hdsu_core.security.roles import cli_actor

# The bench's default methods: HDSU, the baselines, then the fair-comparison ones (docs/method.md).
BENCH_METHODS = "hdsu,grad_ascent,grad_diff,npo,grad_diff_masked,npo_masked,simnpo"


def _progress(quiet: bool) -> ProgressFn:
    return no_progress if quiet else stderr_progress


def _store(db):
    from hdsu_core.store import Store  # lazy: duckdb and pandas slow the start of every command

    return Store(db)


def _settings(items: list[str] | None) -> dict:
    out = {}
    for kv in items or []:
        if "=" not in kv:
            raise ValueError(f"--set expects KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _headline(r: dict) -> dict:
    keys = [
        "run_id",
        "method",
        "dataset",
        "model",
        "forget",
        "forget_acc_before",
        "forget_acc_after",
        "retain_acc_before",
        "retain_acc_after",
        "holdout_acc_before",
        "holdout_acc_after",
        "mia_auc",
        "mia_auc_ci_low",
        "mia_auc_ci_high",
        "mia_auc_before",
        "mia_auc_mink",
        "mia_resistance",
        "forgetting_rate",
        "knowledge_preservation",
        "retain_change_points",
        "changed_fraction",
        "changed_weights",
        "total_weights",
        "ppl_before",
        "ppl_after",
        "seconds",
        "unlearn_seconds",
        "steps",
    ]
    out = {k: r.get(k) for k in keys if k in r}
    out["stopped"] = r.get("info", {}).get("stopped")
    out["device"] = r.get("info", {}).get("device")
    out["dtype"] = r.get("info", {}).get("dtype")
    out.update({k: v for k, v in r.get("info", {}).items() if k.startswith("unlearn_")})  # a LoRA unlearning run
    out["unlearned_root"] = r.get("unlearned_root")
    out["receipt_sha256"] = r.get("receipt_sha256")
    out.update({k: v for k, v in r.items() if k.startswith(("attack_", "mia_auc_")) and k not in out})
    return out


def _training_recipe(a) -> dict:
    """--inject-lora / --inject-dp-*: recipe keys of the injection (so they key its cache too);
    delta and clip only with an epsilon, where they mean something."""
    out = {"lora_r": a.inject_lora, "dp_epsilon": a.inject_dp_epsilon}
    if a.inject_dp_epsilon is not None:
        out.update(dp_delta=a.inject_dp_delta, dp_clip=a.inject_dp_clip)
    return {k: v for k, v in out.items() if v is not None}


def _recipe(a) -> dict:
    return {**_settings(a.inject_set), **_training_recipe(a)}


def _add_training_flags(x) -> None:
    x.add_argument(
        "--lora",
        type=int,
        metavar="R",
        help="unlearn through rank-R LoRA adapters (peft): the method trains only them, they are merged "
        "into the weights before the probes, the delta and the receipt (a mask fraction then counts adapter "
        "parameters)",
    )
    x.add_argument("--inject-lora", type=int, metavar="R", help="inject with rank-R LoRA adapters (peft), merged after")
    x.add_argument(
        "--inject-dp-epsilon", type=float, metavar="EPS", help="inject with DP-SGD (opacus) to this epsilon; needs LoRA"
    )
    x.add_argument("--inject-dp-delta", type=float, default=1e-5, help="DP-SGD delta (default 1e-5)")
    x.add_argument("--inject-dp-clip", type=float, default=1.0, help="DP-SGD per-item gradient clip (default 1.0)")


def cmd_run(a) -> int:
    from hdsu_core.attacks import parse_attacks  # lazy: torch
    from hdsu_core.engine import RunConfig, check_settings  # lazy: torch
    from hdsu_core.lifecycle import create_run, execute_run  # lazy: torch

    forget = [f for f in (a.forget or "").split(",") if f.strip()]
    attacks = parse_attacks(a.attacks)  # an unknown attack fails before a run row exists
    cfg = RunConfig(
        forget=forget,
        method=a.method,
        model=a.model,
        dataset=a.dataset,
        seed=a.seed,
        hierarchy=a.hierarchy,
        settings=_settings(a.set),
        limit=a.limit,
        inject=a.inject,
        recipe=_recipe(a),
        holdout_fraction=a.holdout_fraction,
        device=a.device,
        dtype=a.dtype,
        from_run=a.from_run,
        attacks=attacks,
        processes=_processes(a.processes, a.device),
        autocast=not a.no_autocast,
        gradient_checkpointing=a.gradient_checkpointing,
        unlearn_lora_r=a.lora,
        fsdp=a.fsdp,
    )
    check_settings(cfg.method, cfg.settings)  # a bad --set fails before the database is opened
    store = _store(a.db)
    if a.from_run:  # before a run row exists: the earlier run must have its model files
        from hdsu_core.artifacts.run_models import get_run_model, load_run_delta  # lazy: torch

        load_run_delta(get_run_model(store, a.from_run))
    # An unknown method, a bad --set value, a missing or broken model, bad data or a selection
    # that cannot be measured fails in create_run, before a run row exists; a failure after that
    # marks the row failed and reaches cli.main as one error line. Ctrl-C or SIGTERM marks it
    # cancelled (cli.main runs every command inside interrupts.interrupts); a killed process is
    # found by its stale heartbeat (runs reap).
    run_id = create_run(store, cfg, author=cli_actor(store, a.author))
    if cfg.processes > 1:
        r = _run_processes(store, run_id, cfg.processes)
    else:
        r = execute_run(store, run_id, progress=_progress(a.quiet), executor="cli")
    out = _headline(r)
    if a.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        for k, v in out.items():
            print(f"{k:24s} {v}")
    return 0


def _processes(spec: str, device: str) -> int:
    """``--processes``: a count, or ``auto`` (one per GPU when the run computes on several)."""
    from hdsu_core.compute import resolve_device  # lazy: torch
    from hdsu_core.distributed import auto_processes  # lazy: torch

    if str(spec).strip().lower() == "auto":
        return auto_processes(resolve_device(device))
    try:
        return int(spec)
    except ValueError:
        raise ValueError(f"--processes takes a number or auto, not {spec!r}") from None


def _run_processes(store, run_id: str, processes: int) -> dict:
    """A CLI run over several processes: torchrun in the foreground (ranks.py), then the result
    rank 0 stored; a run that did not finish is one error line."""
    from hdsu_core.jobs import cancel_flag  # lazy: torch
    from hdsu_core.ranks import launch_ranks  # lazy: torch

    launch_ranks(store, run_id, processes, cancel_flag(run_id))
    cancel_flag(run_id).unlink(missing_ok=True)
    row = store.get_run(run_id)
    if row["status"] != "done":
        raise ValueError(f"run {run_id} {row['status']}: {row.get('error') or row.get('message') or ''}".strip())
    return row["summary"]


def cmd_bench(a) -> int:
    from hdsu_core.attacks import parse_attacks  # lazy: torch
    from hdsu_core.bench import (  # lazy: torch
        format_attack_table,
        format_step_timing,
        format_summary,
        format_table,
        format_time_ratios,
        method_settings,
        run_bench,
        summarise_seeds,
    )
    from hdsu_core.compute import resolve_compute  # lazy: torch
    from hdsu_core.methods import available  # lazy: torch

    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in available()]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; available: {', '.join(available())}")
    forget = [f for f in (a.forget or "").split(",") if f.strip()] or None
    settings = method_settings(methods, _settings(a.set))  # a bad --set fails before any work
    attacks = parse_attacks(a.attacks)  # ... and so does an unknown attack
    resolve_compute(a.device, a.dtype)  # a missing GPU fails before any work
    seeds = [a.seed]
    if a.seeds:
        try:
            seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"--seeds takes comma-separated integers, not {a.seeds!r}") from None
    store = _store(a.db)
    rows = []
    for seed in seeds:
        rows += run_bench(
            a.dataset or ["demo"],
            methods,
            forget=forget,
            seed=seed,
            store=store,
            progress=_progress(a.quiet),
            retrain=not a.no_retrain,
            limit=a.limit,
            settings=settings,
            device=a.device,
            dtype=a.dtype,
            model=a.model,
            inject=a.inject,
            recipe=_training_recipe(a),
            lora_r=a.lora,
            keep_models=a.keep_models,
            author=cli_actor(store, None),
            attacks=attacks,
        )
    summary = summarise_seeds(rows) if len(seeds) > 1 else []
    if a.json:
        print(json.dumps(rows + summary, indent=2, default=str))
    else:
        print(format_table(rows))
        ratios = format_time_ratios(rows)
        if ratios:
            print("\n" + ratios)
        timing = format_step_timing(rows)
        if timing:
            print("\nstep time and throughput of the update steps (without the stop rule's checks)\n" + timing)
        attacked = format_attack_table(rows)
        if attacked:
            print("\nIs it really gone? (attacks; recovery / gaps / AUCs, docs/method.md)\n" + attacked)
        if summary:
            print("\nover seeds " + ",".join(map(str, seeds)) + " (targets: met/judged)")
            print(format_summary(summary))
    return 0


def cmd_demo(a) -> int:
    from hdsu_core.demo_model import build_demo_model  # lazy: torch
    from hdsu_core.engine import RunConfig  # lazy: torch
    from hdsu_core.lifecycle import create_run, execute_run  # lazy: torch

    b = build_demo_model(progress=stderr_progress)
    print(f"demo model: {b.path} ({b.n_params():,} parameters, train acc {b.meta.get('train_acc')})", file=sys.stderr)
    store = _store(a.db)
    cfg = RunConfig(forget=a.forget.split(","), method="hdsu")
    run_id = create_run(store, cfg, author=cli_actor(store, None))
    r = execute_run(store, run_id, progress=stderr_progress, executor="cli")
    print(json.dumps(_headline(r), indent=2, default=str))
    return 0


def cmd_worker(a) -> int:
    from hdsu_core.jobs import worker_main  # lazy: torch

    return worker_main(a.run_id, a.db)


def register(sub) -> None:
    """Add run, bench, demo and worker to the top-level subparsers of ``cli.py``."""
    _add_run(sub)
    _add_bench(sub)
    x = sub.add_parser("demo", help="build the demo model if needed and run one hdsu run")
    x.add_argument("--forget", default="anxiety", help="concept ids to forget (default anxiety)")
    x.add_argument("--db", help="DuckDB file (default var/hdsu.duckdb or $HDSU_DB)")
    x.set_defaults(fn=cmd_demo)

    x = sub.add_parser("worker", help="(internal) execute a queued run")
    x.add_argument("run_id")
    x.add_argument("--db")
    x.set_defaults(fn=cmd_worker)


def _add_run(sub) -> None:
    x = sub.add_parser("run", help="one unlearning run")
    x.add_argument(
        "--model",
        default="demo",
        help="demo (embedded), smollm2-135m (pretrained; requirements-nodeps.txt), "
        "or a local HF model directory / .gguf file",
    )
    x.add_argument("--method", default="hdsu", help="hdsu, grad_ascent, grad_diff or npo (default hdsu)")
    x.add_argument("--forget", default="", help="concept ids, comma-separated (default per dataset)")
    x.add_argument("--dataset", default="demo", help="demo or KIND:PATH")
    x.add_argument("--hierarchy", help="hierarchy JSON (default data/hierarchy.json)")
    x.add_argument("--db", help="DuckDB file (default var/hdsu.duckdb or $HDSU_DB)")
    x.add_argument("--seed", type=int, default=0, help="seed of the split and the method (default 0)")
    x.add_argument("--limit", type=int, help="use a deterministic sample of N items")
    x.add_argument("--inject", action="store_true", help="fine-tune --model on the dataset first")
    x.add_argument(
        "--inject-set",
        action="append",
        metavar="KEY=VALUE",
        help="knowledge-injection recipe override (repeatable), e.g. batch=4, max_epochs=1, max_len=48",
    )
    _add_training_flags(x)
    x.add_argument(
        "--holdout-fraction", type=float, default=0.2, help="share of the items never trained on (default 0.2)"
    )
    x.add_argument(
        "--device", default="auto", help="auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N"
    )
    x.add_argument(
        "--dtype",
        default="float32",
        help="weight precision of the run: float32 (default) or "
        "bfloat16 (half the memory of a large model; losses and updates stay float32)",
    )
    x.add_argument("--set", action="append", metavar="KEY=VALUE", help="method setting (repeatable)")
    x.add_argument(
        "--from-run", metavar="RUN_ID", help="start from this earlier run's unlearned model (a chained request)"
    )
    x.add_argument(
        "--attacks",
        default="",
        help="after the run, attack copies of the unlearned model: relearn, quant, format, mia, "
        "comma-separated, or all (default none; docs/method.md 'Is it really gone?')",
    )
    x.add_argument(
        "--processes",
        default="auto",
        help="data-parallel processes through torchrun (gloo on the CPU, one GPU each on CUDA); "
        "auto (default): one per GPU when the run computes on several GPUs, else 1",
    )
    x.add_argument(
        "--fsdp",
        action="store_true",
        help="with --lora R and --processes N >= 2: shard the frozen base over the processes (FSDP2), "
        "for a model that does not fit one device; every process computes the whole batch",
    )
    x.add_argument(
        "--no-autocast", action="store_true", help="no bfloat16 autocast of the forward passes on a CUDA GPU"
    )
    x.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute activations in the backward pass (less GPU memory for a large model, slower steps)",
    )
    x.add_argument("--author", help="name recorded in the audit trail (default: the OS user; only in demo mode)")
    x.add_argument("--json", action="store_true", help="print the result as JSON")
    x.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    x.set_defaults(fn=cmd_run)


def _add_bench(sub) -> None:
    x = sub.add_parser("bench", help="all methods + retrain reference on the same split")
    x.add_argument("--dataset", action="append", help="demo or KIND:PATH (repeatable)")
    x.add_argument("--methods", default=BENCH_METHODS, help="comma-separated method names")
    x.add_argument(
        "--forget",
        default="",
        help="concept ids (default: surgery for medmcqa, anxiety,depression,trauma for mhqa, anxiety for demo)",
    )
    x.add_argument("--db", help="DuckDB file for the results (default var/hdsu.duckdb or $HDSU_DB)")
    x.add_argument("--seed", type=int, default=0, help="seed of the split and the methods (default 0)")
    x.add_argument(
        "--seeds",
        help="several seeds, comma-separated (e.g. 0,1,2): every seed is a split and, on "
        "the demo, a demo model of its own; adds a table of targets met over the seeds",
    )
    x.add_argument("--limit", type=int, help="use a deterministic sample of N items per dataset")
    x.add_argument("--no-retrain", action="store_true", help="skip the retrain reference")
    x.add_argument(
        "--model",
        default="demo",
        help="demo (a tiny model trained on each dataset), smollm2-135m or a local HF model directory / .gguf file",
    )
    x.add_argument(
        "--inject",
        action="store_true",
        help="fine-tune --model on each dataset first; its retrain "
        "reference is then the same fine-tune without the forget items",
    )
    _add_training_flags(x)
    x.add_argument(
        "--device",
        default="auto",
        help="device of the unlearning runs: auto, cpu, cuda or cuda:N "
        "(a tiny model's retrain reference trains on the CPU; with --inject on this device)",
    )
    x.add_argument("--dtype", default="float32", help="weight precision of the unlearning runs: float32 or bfloat16")
    x.add_argument(
        "--set",
        action="append",
        metavar="[METHOD:]KEY=VALUE",
        help="method setting (repeatable): KEY=VALUE for every benched method that has KEY "
        "(e.g. mask_fraction=0.01 for a budget point), METHOD:KEY=VALUE for one method",
    )
    x.add_argument(
        "--keep-models",
        action="store_true",
        help="write every run's sparse delta (default: receipts only, to spare the disk)",
    )
    x.add_argument(
        "--attacks",
        default="",
        help="run these attacks on every method's model and on the retrain reference: relearn, "
        "quant, format, mia, comma-separated, or all (default none: the quick bench)",
    )
    x.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    x.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    x.set_defaults(fn=cmd_bench)
