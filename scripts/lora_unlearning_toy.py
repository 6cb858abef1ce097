"""LoRA unlearning against unlearning on the weights, on the memorised toy of tests/test_methods.py
(a 64-wide one-layer Llama trained on ~110 demo items; forget anxiety): each method with and without
``unlearn_lora_r``, over seeds, one JSON line per run and a Markdown table at the end
(docs/method.md, *LoRA unlearning*). The toy model is cached under $HDSU_HOME (default var/).

    .venv/bin/python scripts/lora_unlearning_toy.py [--rank 8] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_methods import TINY  # noqa: E402  (the toy's recipe)

from hdsu_core import datasets  # noqa: E402
from hdsu_core.demo_kb import write_jsonl  # noqa: E402
from hdsu_core.engine import RunConfig, run_unlearning  # noqa: E402
from hdsu_core.hierarchy import load_default  # noqa: E402

CASES = [("grad_diff", {}), ("npo", {}), ("hdsu", {}), ("hdsu", {"mask_fraction": 1.0}), ("npo_masked", {})]
KEYS = ("forget_acc_after", "retain_acc_after", "mia_auc")


def toy_file() -> str:
    h = load_default()
    under = set(h.subtree("anxiety")) | set(h.subtree("depression")) | set(sorted(h.subtree("surgery"))[:12])
    items = [it for it in datasets.load("demo").items if it.labels["concept_id"] in under]
    path = Path(tempfile.mkdtemp()) / "toy.jsonl"
    write_jsonl(items, path)
    return str(path)


def one_run(path: str, method: str, settings: dict, rank: int | None, seed: int) -> dict:
    cfg = RunConfig(
        forget=["anxiety"],
        dataset=f"demo:{path}",
        recipe=TINY,
        settings=settings,
        n_generations=0,
        device="cpu",
        method=method,
        unlearn_lora_r=rank,
        seed=seed,
    )
    r = run_unlearning(cfg)
    info = r["info"]
    return {
        "seed": seed,
        "method": method,
        "settings": ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults",
        "lora_r": rank,
        **{k: round(r[k], 3) for k in KEYS},
        "changed": r["changed_weights"],
        "adapter": info.get("unlearn_adapter_params"),
        "moved": info.get("unlearn_adapter_params_changed"),
        "steps": f"{info.get('steps')} ({info.get('stopped')})",
    }


def table(rows: list[dict]) -> str:
    cols = ["seed", "method", "settings", "LoRA", "forget after", "retain after", "MIA AUC", "changed"]
    out = ["| " + " | ".join([*cols, "adapter moved / size", "steps"]) + " |", "|" + "---|" * 10]
    for r in rows:
        adapter = "-" if r["adapter"] is None else f"{r['moved']:,} / {r['adapter']:,}"
        cells = [r["seed"], r["method"], r["settings"], r["lora_r"] or "-", *(f"{r[k]:.3f}" for k in KEYS)]
        out.append("| " + " | ".join(map(str, [*cells, f"{r['changed']:,}", adapter, r["steps"]])) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--seeds", default="0,1")
    a = ap.parse_args()
    path, rows = toy_file(), []
    for seed in (int(s) for s in a.seeds.split(",")):
        for method, settings in CASES:
            for rank in (None, a.rank):
                rows.append(one_run(path, method, settings, rank, seed))
                print(json.dumps(rows[-1]), flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
