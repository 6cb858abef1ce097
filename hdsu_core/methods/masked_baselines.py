"""GradDiff and NPO restricted to HDSU's mask: the same objective and Adam loop as ``grad_diff``
and ``npo``, but only the weights HDSU would select (``mask_fraction`` of all weights, by the same
Fisher score, seed and settings; ``hdsu.shared_mask``) may change, so sparsity is compared at an
equal budget. Their gradient is zeroed outside the mask (``full_param_loop(..., masks=...)``)."""

from __future__ import annotations

import time

from hdsu_core.methods.base import full_param_loop, register
from hdsu_core.methods.grad_diff import GradDiff, grad_diff_objective
from hdsu_core.methods.hdsu.method import mask_sha256
from hdsu_core.methods.hdsu.shared_mask import MASK_DEFAULTS, MASK_KEYS, MASK_SCHEMA, hdsu_mask, trainable
from hdsu_core.methods.npo import NPO, npo_objective


def masked_run(ctx, s: dict, objective) -> dict:
    """HDSU's mask first (the same ``ctx.rng`` draws as HDSU's), then the baseline's loop on it."""
    t0 = time.perf_counter()
    total = sum(p.numel() for _, p in trainable(ctx.model))
    masks = hdsu_mask(ctx, {k: s[k] for k in MASK_KEYS})
    mask_seconds = time.perf_counter() - t0
    info = full_param_loop(ctx, objective(ctx, s), s, masks=masks)
    k = sum(int(m.sum()) for m in masks.values())
    return {
        **info,
        "mask_size": k,
        "mask_fraction": k / total,
        "mask_by_param": {n: int(m.sum()) for n, m in masks.items()},
        "mask_sha256": mask_sha256(masks),
        "mask_seconds": round(mask_seconds, 2),
    }


@register
class GradDiffMasked:
    name = "grad_diff_masked"
    defaults = {**GradDiff.defaults, **MASK_DEFAULTS}
    schema = {**GradDiff.schema, **MASK_SCHEMA}

    def run(self, ctx) -> dict:
        return masked_run(ctx, {**self.defaults, **ctx.settings}, grad_diff_objective)


@register
class NPOMasked:
    name = "npo_masked"
    defaults = {**NPO.defaults, **MASK_DEFAULTS}
    schema = {**NPO.schema, **MASK_SCHEMA}

    def run(self, ctx) -> dict:
        return masked_run(ctx, {**self.defaults, **ctx.settings}, npo_objective)
