"""HDSU's mask without running HDSU: the forget batch with its token weights, the token-level
NPO push loss on it and the Fisher-scored mask, exactly as ``method.prepare`` builds them (same
calls, same order of ``ctx.rng`` draws). The masked baselines use it, so that they may change
the very weights HDSU would change (sparsity compared at an equal budget)."""

from __future__ import annotations

import torch

from hdsu_core.losses import token_npo_loss
from hdsu_core.methods.base import UnlearnContext
from hdsu_core.methods.hdsu.mask import select_mask
from hdsu_core.methods.hdsu.roles import ForgetBatch, forget_batch
from hdsu_core.methods.hdsu.settings import DEFAULTS, SCHEMA

# The settings the mask depends on besides the push loss's (beta, concept_weight,
# shared_answer_weight, token_level): what a masked baseline may override.
MASK_KEYS = (
    "mask_fraction",
    "damping",
    "fisher_batch",
    "fisher_forget_items",
    "fisher_retain_items",
    "fisher_retain_batch",
    "mask_params",
    "mask_allocation",
)
MASK_DEFAULTS = {k: DEFAULTS[k] for k in MASK_KEYS}
MASK_SCHEMA = {k: SCHEMA[k] for k in MASK_KEYS}


def trainable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def batch_and_mask(ctx: UnlearnContext, s: dict, params: list) -> tuple[ForgetBatch, dict, int, int]:
    """(forget batch, {param name: bool mask}, k, total weights) for the full settings ``s``."""
    fb = forget_batch(ctx, s)

    def push_loss(rows):
        return token_npo_loss(ctx.model, ctx.ref_model, fb.ids[rows], fb.att[rows], fb.push_w[rows], s["beta"])

    ctx.progress("unlearn", 0.0, "scoring parameters (Fisher forget vs retain)")
    masks, k, total = select_mask(ctx, ctx.model, params, push_loss, s)
    return fb, masks, k, total


def hdsu_mask(ctx: UnlearnContext, settings: dict | None = None) -> dict[str, torch.Tensor]:
    """{param name: bool mask} of the weights HDSU selects on this context: HDSU's defaults with
    ``settings`` over them (a baseline passes its ``MASK_KEYS``). Draws from ``ctx.rng`` exactly
    as HDSU's own mask selection does, so on a fresh context with the same seed the mask is HDSU's."""
    _, masks, _, _ = batch_and_mask(ctx, {**DEFAULTS, **(settings or {})}, trainable(ctx.model))
    return masks
