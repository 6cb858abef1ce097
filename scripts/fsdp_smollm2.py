"""SmolLM2-135M (tied embeddings), hdsu through rank-8 LoRA adapters on a few demo items: one
process against two gloo processes with the base sharded (``--fsdp``). Prints one row each:
wall time, weights held per process, the run's numbers, and whether the merged models match.

    python scripts/fsdp_smollm2.py [--limit 24] [--steps 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hdsu_core import jobs  # noqa: E402
from hdsu_core.artifacts.run_models import materialize  # noqa: E402
from hdsu_core.engine import RunConfig  # noqa: E402
from hdsu_core.lifecycle import create_run, execute_run  # noqa: E402
from hdsu_core.store import Store  # noqa: E402


def config(limit: int, steps: int) -> dict:
    settings = {
        "max_steps": steps,
        "forget_batch": 4,
        "retain_batch": 4,
        "fisher_forget_items": 8,
        "fisher_retain_items": 8,
        "mask_fraction": 0.01,
        "repair_steps": 0,
        "settle_steps": 0,
    }
    return dict(
        forget=["anxiety"], model="smollm2-135m", limit=limit, holdout_fraction=0.5, method="hdsu",
        settings=settings, n_generations=1, device="cpu", unlearn_lora_r=8,
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=24)
    ap.add_argument("--steps", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(1)  # as each of the two processes (ranks.py: the cores shared among them)
    store = Store(Path(tempfile.mkdtemp()) / "fsdp.duckdb")
    base = config(a.limit, a.steps)
    rows = []
    for label, extra in (("1 process", {}), ("2 processes, --fsdp", {"processes": 2, "fsdp": True})):
        run_id = create_run(store, RunConfig(**base, **extra), author="fsdp-check")
        t0 = time.time()
        if extra:
            assert jobs.worker_main(run_id, str(store.path)) == 0
        else:
            execute_run(store, run_id, executor="cli")
        run = store.get_run(run_id)
        assert run["status"] == "done", run["error"]
        rows.append((label, time.time() - t0, run))
    states = [materialize(store, r["run_id"]).model.state_dict() for _, _, r in rows]
    diff = max(float((states[0][k].float() - states[1][k].float()).abs().max()) for k in states[0])
    print("| run | wall s | weights held per process | steps | forget after | retain after | changed |")
    print("|---|---|---|---|---|---|---|")
    for label, wall, run in rows:
        s = run["summary"]
        held = s["info"].get("weights_per_process") or s["total_weights"] + s["info"]["unlearn_adapter_params"]
        print(
            f"| {label} | {wall:.0f} | {held:,} | {s['steps']} | {s['forget_acc_after']:.3f} | "
            f"{s['retain_acc_after']:.3f} | {s['changed_weights']:,} |"
        )
    print(f"largest difference between the two merged models: {diff:.2e} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
