"""What LoRA and DP-SGD cost the knowledge injection on the demo KB, in accuracy: the demo's
members injected three ways (all weights / LoRA r8 / DP-SGD LoRA r8 at epsilon 4), each model
probed on the forget, retain and holdout items of the default selection (anxiety).

On the demo there is no pretrained base: every variant starts from the same untrained tiny Llama
(the demo tokenizer and recipe, seed 0). LoRA then learns everything through rank-r adapters on
frozen random weights, a harsher setting than LoRA on a pretrained model; the same epoch budget
for all three (DP-SGD's noise is calibrated to it). Injected models are cached in var/models.

    .venv/bin/python scripts/dp_cost.py [--epochs 60] [--rank 8] [--epsilon 4] [--lr 3e-3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hdsu_core import metrics as M  # noqa: E402
from hdsu_core.engine import (  # noqa: E402
    RunConfig,
    check_run_options,
    forget_selection,
    load_hierarchy,
    load_items,
    prepare_model,
    probe_all,
    probe_max_len,
)
from hdsu_core.tagging import make_split  # noqa: E402


def variants(a) -> list[tuple[str, dict]]:
    common = {"max_epochs": a.epochs, "lr": a.lr, "eval_every": 10}
    return [
        ("full", common),
        (f"LoRA r{a.rank}", {**common, "lora_r": a.rank}),
        (f"DP-LoRA r{a.rank} eps {a.epsilon:g}", {**common, "lora_r": a.rank, "dp_epsilon": a.epsilon}),
    ]


def measure(name: str, recipe: dict) -> dict:
    """Inject (or load the cached model), then probe it on the default demo split."""
    cfg = RunConfig(forget=[], recipe=recipe)
    check_run_options(cfg)
    items = load_items(cfg.dataset)
    split = make_split(items, load_hierarchy(cfg), forget_selection(cfg.forget, cfg.dataset), seed=0)
    t0 = time.time()
    bundle = prepare_model(cfg, items, lambda *a: None)
    seconds = bundle.meta.get("seconds", time.time() - t0)
    scores = probe_all(bundle.model, bundle.tokenizer, split, probe_max_len(bundle))
    acc = {part: M.accuracy(r["correct"] for r in rows) for part, rows in scores.items()}
    meta = bundle.meta
    out = {"name": name, **acc, "trained": meta.get("adapter_params_trained"), "seconds": seconds}
    return out | {"epochs": meta.get("epochs"), "dp_epsilon": meta.get("dp_epsilon")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--epsilon", type=float, default=4.0)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--only", choices=["full", "lora", "dp"], help="one variant (e.g. in a process of its own)")
    a = p.parse_args()
    print("| injection | forget acc | retain acc | holdout acc | trained params | epsilon spent | epochs | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, recipe), kind in zip(variants(a), ("full", "lora", "dp")):
        if a.only and kind != a.only:
            continue
        r = measure(name, recipe)
        eps = f"{r['dp_epsilon']:.2f}" if r.get("dp_epsilon") is not None else "-"
        trained = f"{r['trained']:,}" if r["trained"] else "all"
        print(
            f"| {name} | {r['forget']:.3f} | {r['retain']:.3f} | {r['holdout']:.3f} | {trained} | {eps} "
            f"| {r['epochs']} | {r['seconds']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
