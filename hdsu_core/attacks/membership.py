"""Stronger membership-inference attacks, next to the run's loss and Min-K% attacks. Each is an AUC
of the forget items (members) against the evaluation non-members, with its bootstrap interval;
0.5 = the attacker cannot tell the forgotten items from never-seen ones.

* Min-K%++ (Zhang et al. 2024): per answer token, its log-prob standardised by the mean and
  standard deviation of the log-prob over the whole vocabulary at that position; the mean of the
  lowest 20 %. Higher = member.
* zlib (Carlini et al. 2021): the answer's negative log-likelihood divided by its zlib-compressed
  length in bytes: a loss normalised by how complex the text is. Lower = member.
* reference model (Carlini et al. 2021 / 2022): the answer's log-likelihood under the attacked model
  minus that under a reference model trained without the forget items (the retrain reference).
  Higher = member. Log-likelihoods of the whole answer text, so the two models' tokenizers may differ.
"""

from __future__ import annotations

import math
import zlib
from typing import Sequence

import torch

from hdsu_core import metrics as M
from hdsu_core.attack_targets import MIA_ATTACKS
from hdsu_core.attacks.base import AttackContext, register
from hdsu_core.compute import model_device
from hdsu_core.datasets import QAItem
from hdsu_core.encoding import collate, encode_qa
from hdsu_core.losses import answer_logits
from hdsu_core.probes import MINK_FRACTION

ATTACK_NAMES = MIA_ATTACKS  # in the order they are reported


@torch.no_grad()
def answer_token_stats(model, tok, items: Sequence[QAItem], *, max_len: int, batch_size: int = 16) -> list[dict]:
    """Per item: the correct answer's total log-prob (``logprob``) and its Min-K%++ score."""
    model.eval()
    out: list[dict] = []
    for s in range(0, len(items), batch_size):
        chunk = items[s : s + batch_size]
        encs = [encode_qa(tok, it.question, it.answer_text, max_len) for it in chunk]
        ids, att, labels = collate(encs, tok.pad_token_id, model_device(model))
        amask = labels[:, 1:] != -100
        logp = torch.log_softmax(answer_logits(model, ids, att, amask), -1)
        picked = logp.gather(-1, ids[:, 1:][amask].unsqueeze(-1)).squeeze(-1)
        probs = logp.exp()
        mu = (probs * logp).sum(-1)
        sigma = ((probs * logp.square()).sum(-1) - mu.square()).clamp_min(1e-12).sqrt()
        z = (picked - mu) / sigma
        for it, lp, zz in zip(chunk, torch.split(picked, amask.sum(1).tolist()), torch.split(z, amask.sum(1).tolist())):
            low = sorted(zz.tolist())
            k = max(1, int(math.ceil(len(low) * MINK_FRACTION)))
            out.append({"item_id": it.id, "logprob": float(lp.sum()), "minkpp": sum(low[:k]) / k})
    return out


def zlib_score(answer_logprob: float, text: str) -> float:
    """Negative log-likelihood per zlib-compressed byte of ``text`` (lower = more member-like)."""
    return -answer_logprob / len(zlib.compress(text.strip().encode("utf-8")))


def member_scores(stats: Sequence[dict], items: Sequence[QAItem], ref: Sequence[dict] | None) -> dict[str, list[float]]:
    """Attack name -> per-item score, oriented so that higher = more member-like."""
    out = {
        "minkpp": [s["minkpp"] for s in stats],
        "zlib": [-zlib_score(s["logprob"], it.answer_text) for s, it in zip(stats, items)],
    }
    if ref is not None:
        out["ref"] = [s["logprob"] - r["logprob"] for s, r in zip(stats, ref)]
    return out


def _aucs(model, tok, members, non_members, ref, max_len: int, suffix: str) -> dict[str, float]:
    """AUC (and its bootstrap interval) of every attack for one attacked model."""
    items = list(members) + list(non_members)
    stats = answer_token_stats(model, tok, items, max_len=max_len)
    ref_stats = None if ref is None else answer_token_stats(ref[0], ref[1], items, max_len=max_len)
    out: dict[str, float] = {}
    n = len(members)
    for name, scores in member_scores(stats, items, ref_stats).items():
        out[f"mia_auc_{name}{suffix}"] = M.auc(scores[:n], scores[n:])
        if not suffix:
            out[f"mia_auc_{name}_ci_low"], out[f"mia_auc_{name}_ci_high"] = M.auc_bootstrap_ci(scores[:n], scores[n:])
    return out


@register
class Membership:
    name = "mia"
    title = "Membership inference"

    def run(self, ctx: AttackContext) -> dict[str, float]:
        non_members = [it for it in ctx.split.holdout if it.id in ctx.eval_ids]
        if not ctx.split.forget or not non_members:
            return {}
        ctx.progress(
            "attack", 0.95, "membership attacks: Min-K%++, zlib" + (", reference model" if ctx.reference else "")
        )
        out = _aucs(ctx.model, ctx.tok, ctx.split.forget, non_members, ctx.reference, ctx.max_len, "")
        out.update(
            _aucs(ctx.original, ctx.original_tok, ctx.split.forget, non_members, ctx.reference, ctx.max_len, "_before")
        )
        return out
