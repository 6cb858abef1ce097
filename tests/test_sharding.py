"""The sharded base of ``--fsdp`` (sharding.py) over two gloo processes against one plain process,
on a tiny Llama with tied embeddings (SmolLM2's layout: the embedding stays whole) and untied
ones (embedding and head sharded as their own units): the same adapter gradients, logits, merged
model and plain state-dict names; each process holds its share of the sharded weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hdsu_core import paths, sharding

WORKER = Path(__file__).with_name("fsdp_worker.py")


def _worker(out: Path, mode: str, processes: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(paths.PROJECT_ROOT)}
    cmd = [sys.executable, str(WORKER), str(out), mode]
    if processes > 1:
        cmd[1:1] = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _run(tmp_path: Path, tied: bool, processes: int) -> dict:
    out = tmp_path / f"{tied}-{processes}.pt"
    _worker(out, "tied" if tied else "untied", processes)
    return torch.load(out)


@pytest.mark.parametrize("tied", [True, False])
def test_two_processes_with_a_sharded_base_compute_the_one_process_result(tmp_path, tied):
    one, two = _run(tmp_path, tied, 1), _run(tmp_path, tied, 2)
    assert torch.equal(one["adapted"], two["adapted"])  # two steps through the adapters: bit for bit
    torch.testing.assert_close(two["merged"], one["merged"], rtol=0, atol=1e-6)
    assert set(one["state"]) == set(two["state"])  # plain names, no adapter matrices
    for k in one["state"]:
        torch.testing.assert_close(two["state"][k], one["state"][k], rtol=0, atol=0, msg=k)
    # What each process holds: every adapter, a tied embedding whole, half of the rest (every
    # sharded tensor of this model has an even number of rows).
    base = sum(v.numel() for k, v in one["state"].items() if not (tied and k == "lm_head.weight"))
    whole = one["state"]["model.embed_tokens.weight"].numel() if tied else 0
    assert two["held"] == one["held"] + whole + (base - whole) // 2


def test_three_processes_load_in_turn_one_after_another(tmp_path):
    """A sharded run loads its model inside ``distributed.in_turn``: rank 0 first, each one done
    before the next starts (one whole copy in host memory at a time)."""
    out = tmp_path / "turns.txt"
    _worker(out, "turns", 3)
    assert out.read_text().split("\n")[:-1] == ["start 0", "end 0", "start 1", "end 1", "start 2", "end 2"]


def test_plain_names_of_peft_keys():
    assert sharding.plain_name("base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight") == (
        "model.layers.0.self_attn.q_proj.weight"
    )
    assert sharding.plain_name("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight") is None
    assert sharding.plain_name("base_model.model.lm_head.weight") == "lm_head.weight"
