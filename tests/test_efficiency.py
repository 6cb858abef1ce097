"""GPU efficiency options and their pure logic, tested on the CPU: gradient checkpointing gives
the run it replaces, autocast is a no-op off CUDA, and the batch size fitted to free memory
follows the estimate (fake free-memory numbers: this machine has no GPU)."""

from __future__ import annotations

import pytest
import torch
from test_methods import toy  # noqa: F401  (module-scoped toy data set and recipe)
from transformers import LlamaConfig

from hdsu_core import efficiency
from hdsu_core.engine import RunConfig, run_unlearning

LLAMA_1B = LlamaConfig(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, vocab_size=128256)


def test_gradient_checkpointing_gives_the_same_run(toy):  # noqa: F811
    base = {**toy["cfg"].to_dict(), "device": "cpu", "settings": {"max_steps": 3, "repair_steps": 0, "settle_steps": 0}}
    plain = run_unlearning(RunConfig(**base))
    ckpt = run_unlearning(RunConfig(**{**base, "gradient_checkpointing": True}))
    assert ckpt["info"]["gradient_checkpointing"] is True and plain["info"]["gradient_checkpointing"] is False
    keys = ["forget_acc_after", "retain_acc_after", "changed_weights", "steps"]
    assert {k: ckpt[k] for k in keys} == {k: plain[k] for k in keys}
    assert ckpt["info"]["mask_sha256"] == plain["info"]["mask_sha256"]
    assert ckpt["mia_auc"] == pytest.approx(plain["mia_auc"], abs=1e-6)
    assert plain["info"]["autocast"] is None and plain["info"]["batch_from_memory"] is None  # CPU: no-ops
    assert RunConfig(**{**base, "gradient_checkpointing": True}).hash() != RunConfig(**base).hash()


def test_autocast_is_a_no_op_off_cuda():
    cpu = torch.device("cpu")
    assert efficiency.autocast_label(cpu, True) is None
    with efficiency.autocast(cpu, True):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_memory_estimate_grows_with_length_and_shrinks_with_checkpointing_and_bf16():
    e = efficiency.bytes_per_item
    assert e(LLAMA_1B, 256, torch.float32) > 2 * e(LLAMA_1B, 128, torch.float32) * 0.9
    assert e(LLAMA_1B, 128, torch.float32, checkpointing=True) < e(LLAMA_1B, 128, torch.float32) / 2  # logits stay
    assert e(LLAMA_1B, 128, torch.bfloat16) < e(LLAMA_1B, 128, torch.float32)
    # ~1B Llama, 128 tokens, float32: hundreds of MB per item (logits over 128k tokens are 200 MB of it)
    assert 2e8 < e(LLAMA_1B, 128, torch.float32) < 2e9


def test_batch_sizes_fit_the_free_memory_unless_set():
    per = 10**9
    defaults = {"forget_batch": 32, "retain_batch": 32, "lr": 1e-3}
    s, chosen = efficiency.batch_settings({"retain_batch": 8}, defaults, free_bytes=20 * per, per_item=per)
    assert chosen == {"forget_batch": 10} and s == {"retain_batch": 8, "forget_batch": 10}  # the user's 8 stays
    assert efficiency.batch_settings({}, defaults, None, per) == ({}, {})  # not on a GPU: unchanged
    assert efficiency.fitting_batch(10**15, per, 32) == 32  # never above the method's default
    assert efficiency.fitting_batch(10, per, 32) == 1  # at least one item
