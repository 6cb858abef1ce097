"""Knowledge injection: train a tokenizer and a tiny Llama from scratch, or fine-tune a given
model, on a QA set until the model knows it; cached on disk."""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from hdsu_core import lora, paths
from hdsu_core.compute import model_device, set_seed
from hdsu_core.datasets import QAItem
from hdsu_core.encoding import collate, encode_qa, qa_texts
from hdsu_core.losses import answer_nll
from hdsu_core.models import ModelBundle, load_model, save_model
from hdsu_core.private_training import DP_DEFAULTS, PrivateSGD, make_private, unwrap
from hdsu_core.probes import score_mcq
from hdsu_core.progress import ProgressFn, no_progress

# The tiny-model recipe of the embedded demo model, and the base of every tiny-model recipe.
DEMO_RECIPE: dict[str, Any] = {
    "hidden": 128,
    "layers": 2,
    "heads": 4,
    "intermediate": 256,
    "vocab": 4000,
    "lr": 3e-3,
    "batch": 32,
    "max_epochs": 400,
    "target_acc": 0.99,
    "seed": 0,
    "holdout_fraction": 0.2,
    "max_len": 96,
    "version": 4,
}


def train_tokenizer(texts: Sequence[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # lazy: only to build
    from transformers import PreTrainedTokenizerFast  # lazy: heavy import, only to build a tiny model

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        special_tokens=["<pad>", "<bos>", "<eos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_llama(vocab_size: int, recipe: dict, tok=None):
    from transformers import LlamaConfig, LlamaForCausalLM  # lazy: heavy import, only to build a tiny model

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=recipe["hidden"],
        intermediate_size=recipe["intermediate"],
        num_hidden_layers=recipe["layers"],
        num_attention_heads=recipe["heads"],
        num_key_value_heads=recipe["heads"],
        max_position_embeddings=max(128, recipe["max_len"] + 8),
        tie_word_embeddings=False,
        bos_token_id=getattr(tok, "bos_token_id", 1),
        eos_token_id=getattr(tok, "eos_token_id", 2),
        pad_token_id=getattr(tok, "pad_token_id", 0),
    )
    return LlamaForCausalLM(cfg)


def train_qa(
    model,
    tok,
    items: Sequence[QAItem],
    *,
    lr: float,
    batch: int,
    max_epochs: int,
    target_acc: float,
    seed: int,
    max_len: int,
    progress: ProgressFn = no_progress,
    eval_every: int = 10,
    time_budget_s: float | None = None,
    dp: dict | None = None,
) -> dict:
    """Answer-only causal LM training until MCQ accuracy on ``items`` reaches ``target_acc``.
    With ``dp`` (``dp_epsilon`` and optionally ``dp_delta`` / ``dp_clip``) the optimizer is DP-SGD
    (private_training.py): per-item clipping and noise instead of the global norm clip."""

    set_seed(seed)
    encs = [encode_qa(tok, it.question, it.answer_text, max_len) for it in items]
    params = [p for p in model.parameters() if p.requires_grad]  # with LoRA: the adapters only
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    private = (
        make_private(model, opt, len(encs), {**dp, "batch": batch, "max_epochs": max_epochs, "seed": seed})
        if dp
        else None
    )
    if private is not None:
        opt = private.optimizer
    rng = random.Random(seed)
    order = list(range(len(encs)))  # shuffled in place each epoch (as the cached models were trained)
    t0 = time.time()
    acc, epoch = 0.0, 0
    total = max_epochs * math.ceil(len(encs) / batch)
    warm = min(50, total // 10 + 1)
    step = 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        for chunk_ids in _epoch_batches(order, batch, rng, private):
            ids, att, labels = collate([encs[i] for i in chunk_ids], tok.pad_token_id, model_device(model))
            for g in opt.param_groups:
                g["lr"] = lr * min(1.0, (step + 1) / warm)
            opt.zero_grad(set_to_none=True)  # before the forward: opacus keeps per-item state from it
            loss = answer_nll(model, ids, att, labels).mean()
            loss.backward()
            if private is None:  # DP-SGD clips per item instead
                torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
        if epoch % eval_every == 0 or epoch == max_epochs:
            model.eval()
            acc = float(np.mean([r["correct"] for r in score_mcq(model, tok, items, max_len=max_len)]))
            progress("inject", epoch / max_epochs, f"epoch {epoch} loss {loss.item():.3f} acc {acc:.3f}")
            if acc >= target_acc:
                break
            if time_budget_s and time.time() - t0 > time_budget_s:
                break
    model.eval()
    stats = {"epochs": epoch, "train_acc": acc, "seconds": round(time.time() - t0, 2), "steps": step}
    if private is not None:
        stats.update(private.report())
        unwrap(private.module)
    return stats


def _epoch_batches(order: list[int], batch: int, rng: random.Random, private: PrivateSGD | None):
    """One epoch of item-index batches: ``order`` reshuffled and cut in chunks, or under DP-SGD
    the Poisson-sampled batches its privacy accounting assumes."""
    if private is not None:
        yield from private.batches()
        return
    rng.shuffle(order)
    for s in range(0, len(order), batch):
        yield order[s : s + batch]


def _hash_items(items: Sequence[QAItem]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([it.id, it.question, list(it.options), it.answer]).encode())
    return h.hexdigest()[:16]


def inject_knowledge(
    items: Sequence[QAItem],
    *,
    name: str,
    recipe: dict | None = None,
    base: str | Path | None = None,
    progress: ProgressFn = no_progress,
    cache_dir: Path | None = None,
    device: torch.device | str = "cpu",
) -> ModelBundle:
    """Train a model on ``items`` (the members of a dataset) until it knows them; cached on disk.

    Without ``base`` a tiny Llama with its own BPE tokenizer is trained from scratch (fast on a
    CPU); with ``base`` (a local HF directory) that model is fine-tuned with its own tokenizer,
    on ``device``. Tiny models always train on the CPU: their cached weights are then the same on
    every machine (a GPU would not be faster at that size anyway). Returns the model on the CPU.
    """
    recipe = complete_recipe({**DEMO_RECIPE, **(recipe or {})})
    key = hashlib.sha256(
        json.dumps(
            {"items": _hash_items(items), "recipe": recipe, "base": str(base) if base else None}, sort_keys=True
        ).encode()
    ).hexdigest()[:12]
    out = (cache_dir or paths.model_cache()) / f"{name}-{key}"
    if (out / "hdsu_meta.json").exists():
        return load_model(out)
    set_seed(recipe["seed"])
    if base:
        b = load_model(base)
        model, tok = b.model.to(device), b.tokenizer
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
    else:
        progress("inject", 0.0, f"training tokenizer on {len(items)} items")
        tok = train_tokenizer(qa_texts(items), recipe["vocab"])
        model = tiny_llama(len(tok), recipe, tok)
    model, stats = _train(model, tok, items, recipe, progress)
    meta = {
        "name": name,
        "recipe": recipe,
        "items": len(items),
        "items_hash": _hash_items(items),
        "base": str(base) if base else None,
        **stats,
    }
    save_model(model, tok, out, meta)
    return load_model(out)


# Recipe keys of a LoRA / DP-SGD injection (lora.py, private_training.py); absent = all weights, no DP.
TRAINING_KEYS = ("lora_r", "dp_epsilon", "dp_delta", "dp_clip")


def complete_recipe(recipe: dict) -> dict:
    """A DP recipe with its delta and clip filled in: the default and the same value written out
    are one cached model, not two."""
    return {**DP_DEFAULTS, **recipe} if recipe.get("dp_epsilon") is not None else recipe


def _train(model, tok, items: Sequence[QAItem], recipe: dict, progress: ProgressFn) -> tuple[Any, dict]:
    """``train_qa`` on all weights, or on rank-``lora_r`` adapters merged back afterwards; DP-SGD
    with ``dp_epsilon``. The stats then say what was trained and what the merge changed."""
    r = recipe.get("lora_r")
    dp = {k: recipe[k] for k in ("dp_epsilon", "dp_delta", "dp_clip")} if recipe.get("dp_epsilon") is not None else None
    if dp and not r:  # opacus has no per-item gradients for LlamaRMSNorm: DP needs the adapters
        raise ValueError(
            "DP-SGD injection needs LoRA (--inject-lora R): opacus cannot train every weight of this model"
        )
    base = lora.snapshot(model) if r else None
    if r:
        model = lora.wrap(model, int(r))
    trained = lora.trainable_params(model)
    progress("inject", 0.0, f"training {trained:,} parameters")
    stats = train_qa(
        model,
        tok,
        items,
        lr=recipe["lr"],
        batch=recipe["batch"],
        max_epochs=recipe["max_epochs"],
        target_acc=recipe["target_acc"],
        seed=recipe["seed"],
        max_len=recipe["max_len"],
        progress=progress,
        eval_every=recipe.get("eval_every", 10),
        time_budget_s=recipe.get("time_budget_s"),
        dp=dp,
    )
    if r and base is not None:
        model = lora.merge(model)
        stats.update(
            lora_r=int(r), adapter_params_trained=trained, merged_weights_changed=lora.weights_changed(base, model)
        )
    return model, stats


def training_info(meta: dict) -> dict:
    """What a run's info and receipt say about how its model was injected (empty for a plain one)."""
    keys = ("lora_r", "adapter_params_trained", "merged_weights_changed", "dp_epsilon", "dp_delta", "dp_clip")
    return {k: meta[k] for k in keys if meta.get(k) is not None}
