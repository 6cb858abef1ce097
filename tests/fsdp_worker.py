"""Run by tests/test_sharding.py under torchrun (two gloo processes), and in one plain process:
a tiny Llama (tied or untied embeddings) with LoRA adapters, optionally sharded (sharding.py),
two plain gradient steps on the adapters, the merge, and the whole model gathered; rank 0 saves
what the test compares."""

from __future__ import annotations

import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hdsu_core import distributed, lora, sharding
from hdsu_core.losses import answer_logits


def main(out: str, tied: bool) -> None:
    distributed.init(torch.device("cpu"))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=tied,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    skeleton = lora.snapshot(model)
    adapted, _ = lora.wrap_for_unlearning(model, 4, seed=1)
    held = (
        sharding.shard(adapted, torch.device("cpu"), sharding.process_mesh(torch.device("cpu")))
        if distributed.active()
        else lora.trainable_params(adapted)
    )
    ids = torch.randint(0, 96, (3, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(3, 8, dtype=torch.bool)
    mask[:, 4:] = True
    params = [p for p in adapted.parameters() if p.requires_grad]
    for _ in range(2):  # the losses' two paths: the whole model, and decoder then head
        loss = (
            adapted(input_ids=ids, labels=ids).loss
            + answer_logits(adapted, ids, torch.ones_like(ids), mask).logsumexp(-1).mean()
        )
        for p, g in zip(params, torch.autograd.grad(loss, params)):
            p.data -= 0.5 * g
    with torch.no_grad():
        adapted_logits = adapted(input_ids=ids).logits
    if distributed.active():
        sharding.merge_into_shards(adapted)
        with torch.no_grad():
            merged_logits = adapted(input_ids=ids).logits
        plain = LlamaForCausalLM(config)
        plain.load_state_dict(skeleton)
        merged = sharding.gather_into(adapted, plain if distributed.is_main() else None)
    else:
        merged = lora.merge(adapted)
        with torch.no_grad():
            merged_logits = merged(input_ids=ids).logits
    if distributed.is_main():
        assert merged is not None
        state = {k: v.detach().clone() for k, v in merged.state_dict().items()}
        torch.save({"adapted": adapted_logits, "merged": merged_logits, "state": state, "held": held}, out)
    distributed.close()


def turns(out: str) -> None:
    """Each rank appends 'start r' and 'end r' around a pause inside ``distributed.in_turn``."""
    distributed.init(torch.device("cpu"))
    with distributed.in_turn():
        with open(out, "a") as f:
            f.write(f"start {distributed.rank()}\n")
        time.sleep(0.3)
        with open(out, "a") as f:
            f.write(f"end {distributed.rank()}\n")
    distributed.close()


if __name__ == "__main__":
    if sys.argv[2] == "turns":
        turns(sys.argv[1])
    else:
        main(sys.argv[1], sys.argv[2] == "tied")
