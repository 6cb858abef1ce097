"""NPO baseline (Zhang et al. 2024) with a retain NLL term, on all parameters."""

from hdsu_core.losses import answer_weights, npo_loss
from hdsu_core.methods.base import (
    BASELINE_DEFAULTS,
    BASELINE_SCHEMA,
    forget_retain_objective,
    full_param_loop,
    register,
)
from hdsu_core.methods.schema import NON_NEGATIVE, POSITIVE


def npo_objective(ctx, s: dict):
    """The NPO objective on a fresh forget and retain batch per call (shared with the masked variant)."""

    def forget_term(ids, att, labels):
        return npo_loss(ctx.model, ctx.ref_model, ids, att, answer_weights(labels), s["beta"])

    return forget_retain_objective(ctx, s, forget_term, s["retain_weight"])


@register
class NPO:
    name = "npo"
    defaults = {**BASELINE_DEFAULTS, "beta": 0.1, "retain_weight": 1.0}
    schema = {**BASELINE_SCHEMA, "beta": POSITIVE, "retain_weight": NON_NEGATIVE}

    def run(self, ctx) -> dict:
        s = {**self.defaults, **ctx.settings}
        return full_param_loop(ctx, npo_objective(ctx, s), s)
