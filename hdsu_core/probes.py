"""Per-item probes of a model: MCQ by option log-likelihood, membership-inference scores,
perplexity and sample generations. Each returns plain per-item values; metrics.py aggregates.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from hdsu_core.compute import model_device
from hdsu_core.datasets import QAItem
from hdsu_core.encoding import PROMPT, collate, encode_prompted, encode_qa
from hdsu_core.losses import answer_logits, token_logprobs

MINK_FRACTION = 0.2  # Min-K% Prob (Shi et al. 2024): mean of the lowest 20 % token log-probs


@torch.no_grad()
def score_mcq(
    model,
    tok,
    items: Sequence[QAItem],
    *,
    max_len: int = 256,
    batch_size: int = 128,
    prompt: Callable[[QAItem], str] | None = None,
) -> list[dict]:
    """For each item: sum log-prob of every option given the question; the prediction is the
    argmax. Also the correct answer's mean NLL (``loss``) and Min-K%
    (``mink``), the membership-inference scores (lower loss / higher mink = more member-like).
    ``prompt`` replaces the QA template (item -> prompt text; the format-shift probes)."""
    model.eval()
    dev = model_device(model)
    seqs = []  # (item index, option index, Encoded)
    for i, it in enumerate(items):
        text = None if prompt is None else prompt(it)
        for j, opt in enumerate(it.options):
            enc = (
                encode_qa(tok, it.question, opt, max_len) if text is None else encode_prompted(tok, text, opt, max_len)
            )
            seqs.append((i, j, enc))
    opt_lp = [[0.0] * len(it.options) for it in items]
    opt_ntok = [[1] * len(it.options) for it in items]
    full_lp: dict[int, list[float]] = {}
    # Sort by length so padding is small.
    order = sorted(range(len(seqs)), key=lambda k: len(seqs[k][2].ids))
    for s in range(0, len(order), batch_size):
        chunk = [seqs[k] for k in order[s : s + batch_size]]
        ids, att, labels = collate([c[2] for c in chunk], tok.pad_token_id, dev)
        amask = labels[:, 1:] != -100
        # Output layer only at the answer positions (the only log-probs used): on a small model
        # the vocabulary projection at every position is most of the cost of this probe.
        logp = torch.log_softmax(answer_logits(model, ids, att, amask), -1)
        picked = logp.gather(-1, ids[:, 1:][amask].unsqueeze(-1)).squeeze(-1)
        per_row = torch.split(picked, amask.sum(1).tolist())
        for r, (i, j, _enc) in enumerate(chunk):
            opt_lp[i][j] = float(per_row[r].sum())
            opt_ntok[i][j] = len(per_row[r])
            if j == items[i].answer:
                full_lp[i] = per_row[r].tolist()
    out = []
    for i, it in enumerate(items):
        lps = opt_lp[i]
        pred = max(range(len(lps)), key=lambda j: (lps[j], -j))
        toks = sorted(full_lp[i])
        k = max(1, int(math.ceil(len(toks) * MINK_FRACTION)))
        out.append(
            {
                "item_id": it.id,
                "pred": pred,
                "answer": it.answer,
                "correct": pred == it.answer,
                "answer_logprob": lps[it.answer],
                "loss": -lps[it.answer] / opt_ntok[i][it.answer],
                "mink": sum(toks[:k]) / k,
                "option_logprobs": lps,
            }
        )
    return out


@torch.no_grad()
def perplexity(model, tok, texts: Sequence[str], *, max_len: int = 256, batch_size: int = 64) -> float:
    """Token-level perplexity of ``texts`` (whole text, bos excluded)."""
    if not texts:
        return float("nan")
    nll, n = 0.0, 0
    for s in range(0, len(texts), batch_size):
        enc = [tok(t, add_special_tokens=False)["input_ids"][: max_len - 1] for t in texts[s : s + batch_size]]
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        L = max(len(e) + len(bos) for e in enc)
        ids = torch.full((len(enc), L), tok.pad_token_id, dtype=torch.long)
        att = torch.zeros_like(ids)
        for i, e in enumerate(enc):
            row = bos + e
            ids[i, : len(row)] = torch.tensor(row)
            att[i, : len(row)] = 1
        lp = token_logprobs(model, ids, att)
        m = att[:, 1:].bool().to(lp.device)
        nll -= float(lp[m].sum())
        n += int(m.sum())
    return math.exp(nll / max(n, 1))


@torch.no_grad()
def generate(model, tok, questions: Sequence[str], *, max_new_tokens: int = 16) -> list[str]:
    """Greedy continuations of the QA prompt (deterministic)."""
    outs = []
    for q in questions:
        prompt = PROMPT.format(question=q.strip())
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        if tok.bos_token_id is not None:
            ids = [tok.bos_token_id] + ids
        x = torch.tensor([ids], device=model_device(model))
        g = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        outs.append(tok.decode(g[0, len(ids) :].tolist(), skip_special_tokens=True).strip())
    return outs
