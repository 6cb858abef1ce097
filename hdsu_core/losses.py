"""Losses and differentiable scores over encoded QA batches, one implementation each, shared by
training, probes and every unlearning method."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from hdsu_core.compute import model_device
from hdsu_core.encoding import Encoded, collate, encode_qa


def next_token_logp(model, ids, att) -> torch.Tensor:
    """log-softmax of the next-token logits (float) at every position, shape (B, T-1, V)."""
    dev = model_device(model)
    ids, att = ids.to(dev), att.to(dev)
    logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
    return torch.log_softmax(logits, -1)


def pick_token_logprobs(logp: torch.Tensor, ids) -> torch.Tensor:
    """From ``next_token_logp`` output: log p of each actual next token, shape (B, T-1)."""
    return logp.gather(-1, ids[:, 1:].to(logp.device).unsqueeze(-1)).squeeze(-1)


def token_logprobs(model, ids, att) -> torch.Tensor:
    """log p(token_t | tokens_<t) for t >= 1, shape (B, T-1), on the model's device."""
    return pick_token_logprobs(next_token_logp(model, ids, att), ids)


# Model types whose logits are exactly lm_head(last hidden state), with no scaling or soft-capping
# after it: for these the answer NLL only needs the output layer at the answer positions.
_PLAIN_HEAD_TYPES = {"llama", "mistral", "qwen2", "qwen3"}


def answer_logits(model, ids, att, mask: torch.Tensor) -> torch.Tensor:
    """Next-token logits (float) at the positions where ``mask`` (B, T-1) is set, shape (N, V).
    On plain-head models the output layer runs only there: over a 4,000-32,000-token vocabulary it
    is most of the cost of a small model's forward and backward pass, and answers are a few tokens
    of each item. Other models compute all logits and select. Inputs are moved to the model's
    device; the result lives there."""
    dev = model_device(model)
    ids, att, mask = ids.to(dev), att.to(dev), mask.to(dev)
    if has_plain_head(model):
        hidden = model.get_decoder()(input_ids=ids, attention_mask=att).last_hidden_state[:, :-1]
        return model.get_output_embeddings()(hidden[mask]).float()
    return model(input_ids=ids, attention_mask=att).logits[:, :-1][mask].float()


def has_plain_head(model) -> bool:
    return (
        getattr(model.config, "model_type", None) in _PLAIN_HEAD_TYPES
        and hasattr(model, "get_decoder")
        and model.get_output_embeddings() is not None
    )


def answer_nll_from_logp(
    logp: torch.Tensor, ids, mask: torch.Tensor, token_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-item mean NLL, shape (B,), from log-softmax ``logp`` (N, V) at the ``mask`` positions
    (as returned by ``answer_logits``), on ``logp``'s device."""
    ids, mask = ids.to(logp.device), mask.to(logp.device)
    picked = logp.gather(-1, ids[:, 1:][mask].unsqueeze(-1)).squeeze(-1)
    lp = torch.zeros(mask.shape, dtype=picked.dtype, device=picked.device).masked_scatter(mask, picked)
    w = mask.float()
    if token_weights is not None:
        w = w * token_weights[:, 1:].to(w.device)
    return -(lp * w).sum(1) / w.sum(1).clamp_min(1e-6)


def answer_nll(model, ids, att, labels, token_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-item mean NLL over answer tokens (optionally weighted), shape (B,)."""
    answer = labels[:, 1:] != -100
    logp = torch.log_softmax(answer_logits(model, ids, att, answer), -1)
    return answer_nll_from_logp(logp, ids, answer, token_weights)


def option_logprob_sums(model, tok, items, max_len: int = 256) -> list[torch.Tensor]:
    """Differentiable MCQ scores: for each item a tensor (n_options,) of each option's summed
    answer log-prob given the question, the quantity whose argmax the MCQ probe takes."""
    encs = [encode_qa(tok, it.question, opt, max_len) for it in items for opt in it.options]
    ids, att, labels = collate(encs, tok.pad_token_id, model_device(model))
    mask = labels[:, 1:] != -100
    logp = torch.log_softmax(answer_logits(model, ids, att, mask), -1)
    sums = -answer_nll_from_logp(logp, ids, mask) * mask.sum(1)
    out, at = [], 0
    for it in items:
        out.append(sums[at : at + len(it.options)])
        at += len(it.options)
    return out


@torch.no_grad()
def option_margins(model, tok, items, max_len: int = 256, batch_items: int = 64) -> list[float]:
    """Per item: the correct option's summed log-prob minus the best distractor's (> 0: the MCQ
    probe answers it correctly). Output layer at answer positions only, so cheaper than score_mcq."""
    out: list[float] = []
    for b in range(0, len(items), batch_items):
        chunk = items[b : b + batch_items]
        for sums, it in zip(option_logprob_sums(model, tok, chunk, max_len), chunk):
            others = torch.cat([sums[: it.answer], sums[it.answer + 1 :]])
            out.append(float(sums[it.answer] - others.max()) if len(others) else float("inf"))
    return out


def option_cross_entropy(model, tok, items, max_len: int = 256) -> torch.Tensor:
    """Per-item cross-entropy of the MCQ decision, shape (B,): -log softmax over the options of
    their summed log-probs, at the correct option. The probes' MCQ rule made differentiable:
    lowering it raises the correct option *and* lowers the distractors that beat it."""
    return torch.stack(
        [-torch.log_softmax(s, 0)[it.answer] for s, it in zip(option_logprob_sums(model, tok, items, max_len), items)]
    )


def option_uniform_loss(model, tok, items, max_len: int = 256) -> torch.Tensor:
    """Per-item KL(uniform || MCQ decision), shape (B,): 0 when every option scores the same, i.e.
    when the question is answered at chance, as by a model that never saw it. A push on the
    answer tokens alone can raise every option's loss together and leave their ranking, the MCQ
    answer, as it was (MHQA: loss at the non-member level, MCQ accuracy still 0.40); this term
    moves the ranking itself."""
    out = []
    for sums, it in zip(option_logprob_sums(model, tok, items, max_len), items):
        out.append(-torch.log_softmax(sums, 0).mean() - math.log(len(it.options)))
    return torch.stack(out)


# ----------------------------------------------------------------------------------------------
# Unlearning losses (the baselines and HDSU share these)
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def item_answer_losses(model, tok, encs: Sequence[Encoded], batch_size: int = 128) -> list[float]:
    """Each encoded item's mean answer NLL, in order (no gradient)."""
    out: list[float] = []
    for s in range(0, len(encs), batch_size):
        ids, att, labels = collate(encs[s : s + batch_size], tok.pad_token_id, model_device(model))
        out.extend(answer_nll(model, ids, att, labels).tolist())
    return out


def mean_answer_loss(model, tok, encs: Sequence[Encoded], batch_size: int = 128) -> float:
    losses = item_answer_losses(model, tok, encs, batch_size)
    return sum(losses) / max(len(losses), 1)


def answer_weights(labels: torch.Tensor) -> torch.Tensor:
    """Token weights 1 on answer tokens, 0 elsewhere (from ``collate`` labels)."""
    return (labels != -100).float()


def npo_loss(model, ref_model, ids, att, weights: torch.Tensor, beta: float) -> torch.Tensor:
    """Sequence-level negative preference optimisation (Zhang et al. 2024) on a weighted token
    log-ratio: L = (2/beta) * mean log(1 + (pi/pi_ref)^beta), with
    log(pi/pi_ref) = sum_t w_t (log p - log p_ref). Its gradient fades as an item's likelihood
    falls below the reference: a bounded push."""
    lp = token_logprobs(model, ids, att)
    with torch.no_grad():
        lp_ref = token_logprobs(ref_model, ids, att)
    w = weights[:, 1:].to(lp.device)
    ratio = ((lp - lp_ref) * w).sum(1)
    return (2.0 / beta) * torch.nn.functional.softplus(beta * ratio).mean()


def simnpo_loss(model, ids, att, labels, beta: float, delta: float = 0.0) -> torch.Tensor:
    """SimNPO's forget loss (Fan et al. 2024, as open-unlearning's ``trainer/unlearn/simnpo.py``
    computes it): reference-free and length-normalised,
    L = -(2/beta) * mean_i log sigmoid(beta * (NLL_i / |y_i| - delta)), with NLL_i / |y_i| the
    mean answer-token NLL of item i. Like NPO's, its gradient fades as an item's likelihood falls;
    the normalisation keeps long answers from dominating."""
    nll = answer_nll(model, ids, att, labels)  # the summed answer NLL / the answer length
    return -torch.nn.functional.logsigmoid(beta * (nll - delta)).mean() * 2.0 / beta


def token_npo(lp: torch.Tensor, lp_ref: torch.Tensor, w: torch.Tensor, norm_w: torch.Tensor, beta: float):
    """Token-level NPO from token log-probs (B, T-1):
    (2/beta) * sum_t w_t softplus(beta * (log p_t - log p_ref_t)) / sum_t norm_w_t.
    Per token rather than per sequence, so a concept-name token that drops quickly does not
    saturate the item and stall the push on its answer tokens; each token's push fades on its own
    once it is well below the original model. ``norm_w`` is ``w`` unless some items' push is
    scaled down while the normaliser should keep counting them (HDSU's item focus)."""
    return (2.0 / beta) * (torch.nn.functional.softplus(beta * (lp - lp_ref)) * w).sum() / norm_w.sum().clamp_min(1e-6)


def token_npo_loss(model, ref_model, ids, att, weights: torch.Tensor, beta: float) -> torch.Tensor:
    """``token_npo`` of the model against the reference on a batch, with token ``weights`` (B, T)."""
    lp = token_logprobs(model, ids, att)
    with torch.no_grad():
        lp_ref = token_logprobs(ref_model, ids, att)
    w = weights[:, 1:].to(lp.device)
    return token_npo(lp, lp_ref, w, w, beta)


def kl_to_ref(logq: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """KL(p_ref || p_theta) per position, from the two log-softmax tensors (..., V) -> (...)."""
    return (logq.exp() * (logq - logp)).sum(-1)


def retain_hold_with_kl(
    model, ref_model, ids, att, labels, kl_weight: float, totals: tuple[int, int] | None = None
) -> torch.Tensor:
    """Mean per-item answer NLL of retain items plus ``kl_weight`` x the mean KL(p_ref || p_theta)
    of the next-token distribution at their answer positions. The NLL only holds the correct
    token; the KL also holds what the original model did *not* predict there, e.g. a forget
    answer that is a distractor of a retained question must not become more likely for it."""
    mask = labels[:, 1:] != -100
    logp = torch.log_softmax(answer_logits(model, ids, att, mask), -1)
    with torch.no_grad():
        logq = torch.log_softmax(answer_logits(ref_model, ids, att, mask), -1)
    nll, kl = answer_nll_from_logp(logp, ids, mask), kl_to_ref(logq, logp)
    if totals is None:
        return nll.mean() + kl_weight * kl.mean()
    # A share of a larger batch (distributed.py): sums over these rows / (items, answer positions) of it.
    return nll.sum() / max(totals[0], 1) + kl_weight * kl.sum() / max(totals[1], 1)
