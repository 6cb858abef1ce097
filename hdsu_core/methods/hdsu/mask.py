"""Importance-scored update mask (docs/method.md, section 2).

s_j = F_forget,j / (F_retain,j + delta), F = mean squared micro-batch gradient (empirical Fisher)
of the push loss on the forget set and of the answer NLL on the retain set; delta = damping x
mean(F_retain), so rarely-used weights are not picked on noise alone. The mask holds
``mask_fraction`` of all weights (rounded down). With ``mask_allocation`` ``per_item`` (default)
each forget item first gets its own k/n top weights by its own score and the rest of the budget
goes by the pooled score, so no item is left without weights that can move it.
"""

from __future__ import annotations

import re

import torch

from hdsu_core import distributed
from hdsu_core.encoding import collate
from hdsu_core.losses import answer_nll

ALLOCATIONS = ("global", "per_item")


def select_mask(ctx, model, params, push_loss, s: dict) -> tuple[dict, int, int]:
    """Returns ({param name: bool mask}, k, total weights). The retain Fisher comes first so that,
    with ``per_item``, each forget item's own gradient can be scored against it as it streams by.
    ``push_loss(rows)`` is the push loss of the forget items at those row indices."""
    model.eval()
    total = sum(p.numel() for _, p in params)
    # Rounded down: the mask never exceeds the fraction (rounding up broke "<= 0.1 %" by one weight).
    k = max(1, int(s["mask_fraction"] * total))
    denom = retain_fisher_denominator(ctx, model, params, s)
    allowed = re.compile(s["mask_params"]) if s["mask_params"] else None
    eligible = {n: allowed is None or bool(allowed.search(n)) for n, _ in params}
    if s["mask_allocation"] not in ALLOCATIONS:
        raise ValueError(f"mask_allocation must be 'global' or 'per_item', not {s['mask_allocation']!r}")
    scores, chosen = forget_scores(ctx, model, params, push_loss, s, denom, eligible, k)
    del denom
    return split_by_param(top_k_mask(scores, chosen, k, total), params), k, total


def retain_fisher_denominator(ctx, model, params, s: dict) -> dict[str, torch.Tensor]:
    """F_retain + delta per tensor, from a seeded sample of retain items in micro-batches.
    Fisher sums in float32 whatever the weights' precision (bfloat16 would round them away).
    Over several processes each takes every n-th micro-batch whole (a square of a micro-batch
    gradient cannot be split by rows) and the sums are added."""
    f_retain = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params}
    sample = ctx.rng.sample(ctx.retain_enc, min(s["fisher_retain_items"], len(ctx.retain_enc)))
    nb, rfb = 0, s["fisher_retain_batch"]
    for i, b in enumerate(range(0, len(sample), rfb)):
        nb += 1
        if not distributed.mine(i):
            continue
        model.zero_grad(set_to_none=True)
        ids, att, labels = collate(sample[b : b + rfb], ctx.tok.pad_token_id, ctx.device)
        answer_nll(model, ids, att, labels).mean().backward()
        for n, p in params:
            if p.grad is not None:
                f_retain[n] += p.grad.detach().float() ** 2
    model.zero_grad(set_to_none=True)
    for n in f_retain:
        distributed.all_sum_(f_retain[n])
        f_retain[n] /= max(nb, 1)
    mean_r = torch.cat([f.flatten() for f in f_retain.values()]).mean()
    return {n: f_retain[n] + s["damping"] * mean_r + 1e-20 for n in f_retain}


def forget_scores(ctx, model, params, push_loss, s: dict, denom: dict, eligible: dict, k: int):
    """The pooled importance score of every weight (flat, ineligible tensors 0) and, with
    ``per_item``, the union of each forget item's own top k/n weights (flat indices). Over
    several processes each scores every n-th micro-batch; sums and unions are combined."""
    per_item = s["mask_allocation"] == "per_item"
    fisher_rows = list(range(len(ctx.forget_enc)))
    if len(fisher_rows) > s["fisher_forget_items"]:  # a seeded sample, not a (possibly sorted) prefix
        fisher_rows = sorted(ctx.rng.sample(fisher_rows, s["fisher_forget_items"]))
    fb = 1 if per_item else s["fisher_batch"]
    k_item = max(1, k // max(len(fisher_rows), 1)) if per_item else 0
    f_forget = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params}
    chosen: set[int] = set()
    nb = 0
    for i, b in enumerate(range(0, len(fisher_rows), fb)):
        nb += 1
        if not distributed.mine(i):
            continue
        model.zero_grad(set_to_none=True)
        push_loss(torch.tensor(fisher_rows[b : b + fb], device=ctx.device)).backward()
        item_scores = []
        for n, p in params:
            g2 = p.grad.detach().float() ** 2 if p.grad is not None else torch.zeros_like(p, dtype=torch.float32)
            f_forget[n] += g2
            if per_item:
                item_scores.append(_masked_flat(g2 / denom[n], eligible[n], p))
        if per_item:
            chosen.update(torch.topk(torch.cat(item_scores), k_item).indices.tolist())
    model.zero_grad(set_to_none=True)
    for n in f_forget:
        distributed.all_sum_(f_forget[n])
    chosen = distributed.union(chosen)
    scores = torch.cat([_masked_flat(f_forget[n] / max(nb, 1) / denom[n], eligible[n], p) for n, p in params])
    return scores, chosen


def _masked_flat(score: torch.Tensor, eligible: bool, p: torch.Tensor) -> torch.Tensor:
    return score.flatten() if eligible else torch.zeros(p.numel(), device=p.device)


def top_k_mask(scores: torch.Tensor, chosen: set[int], k: int, total: int) -> torch.Tensor:
    """Flat bool mask of exactly k weights: every forget item keeps its own few most specific
    weights (overlaps merge; trimmed by pooled score if the union overshoots k), the rest of the
    budget goes by the pooled score."""
    flat_mask = torch.zeros(total, dtype=torch.bool, device=scores.device)
    if chosen:
        idx = torch.tensor(sorted(chosen), device=scores.device)
        if len(idx) > k:
            idx = idx[torch.topk(scores[idx], k).indices]
        flat_mask[idx] = True
    rest = k - int(flat_mask.sum())
    if rest > 0:
        scores[flat_mask] = -1.0
        flat_mask[torch.topk(scores, rest).indices] = True
    return flat_mask


def split_by_param(flat_mask: torch.Tensor, params) -> dict[str, torch.Tensor]:
    """{param name: bool mask of its shape} for every tensor with at least one masked weight."""
    masks, off = {}, 0
    for n, p in params:
        m = flat_mask[off : off + p.numel()].view_as(p)
        off += p.numel()
        if m.any():
            masks[n] = m
    return masks
