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

from hdsu_core import paths
from hdsu_core.compute import model_device, set_seed
from hdsu_core.datasets import QAItem
from hdsu_core.encoding import collate, encode_qa, qa_texts
from hdsu_core.losses import answer_nll
from hdsu_core.models import ModelBundle, load_model, save_model
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
) -> dict:
    """Answer-only causal LM training until MCQ accuracy on ``items`` reaches ``target_acc``."""

    set_seed(seed)
    encs = [encode_qa(tok, it.question, it.answer_text, max_len) for it in items]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    rng = random.Random(seed)
    order = list(range(len(encs)))
    t0 = time.time()
    acc, epoch = 0.0, 0
    steps_per_epoch = math.ceil(len(encs) / batch)
    total = max_epochs * steps_per_epoch
    warm = min(50, total // 10 + 1)
    step = 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        rng.shuffle(order)
        for s in range(0, len(order), batch):
            chunk = [encs[i] for i in order[s : s + batch]]
            ids, att, labels = collate(chunk, tok.pad_token_id, model_device(model))
            loss = answer_nll(model, ids, att, labels).mean()
            cur_lr = lr * min(1.0, (step + 1) / warm)
            for g in opt.param_groups:
                g["lr"] = cur_lr
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
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
    return {"epochs": epoch, "train_acc": acc, "seconds": round(time.time() - t0, 2), "steps": step}


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
    recipe = {**DEMO_RECIPE, **(recipe or {})}
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
    progress("inject", 0.0, f"training {sum(p.numel() for p in model.parameters()):,} parameters")
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
    )
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
