"""NPO baseline (Zhang et al. 2024) with a retain NLL term, on all parameters."""

from hdsu_core.losses import answer_nll, answer_weights, npo_loss
from hdsu_core.methods.base import BASELINE_DEFAULTS, full_param_loop, register


def npo_objective(ctx, s: dict):
    """The NPO objective on a fresh forget and retain batch per call (shared with the masked variant)."""

    def loss():
        ids, att, labels = ctx.batch(ctx.rng.sample(ctx.forget_enc, min(s["forget_batch"], len(ctx.forget_enc))))
        out = npo_loss(ctx.model, ctx.ref_model, ids, att, answer_weights(labels), s["beta"])
        rb = ctx.retain_batch(s["retain_batch"])
        if rb:
            ids, att, labels = ctx.batch(rb)
            out = out + s["retain_weight"] * answer_nll(ctx.model, ids, att, labels).mean()
        return out

    return loss


@register
class NPO:
    name = "npo"
    defaults = {**BASELINE_DEFAULTS, "beta": 0.1, "retain_weight": 1.0}

    def run(self, ctx) -> dict:
        s = {**self.defaults, **ctx.settings}
        return full_param_loop(ctx, npo_objective(ctx, s), s)
