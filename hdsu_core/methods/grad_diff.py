"""GradDiff baseline: ascent on the forget answers plus descent on retain answers (all parameters)."""

from hdsu_core.losses import answer_nll
from hdsu_core.methods.base import BASELINE_DEFAULTS, full_param_loop, register


def grad_diff_objective(ctx, s: dict):
    """The GradDiff objective on a fresh forget and retain batch per call (shared with the masked variant)."""

    def loss():
        ids, att, labels = ctx.batch(ctx.rng.sample(ctx.forget_enc, min(s["forget_batch"], len(ctx.forget_enc))))
        out = -answer_nll(ctx.model, ids, att, labels).mean()
        rb = ctx.retain_batch(s["retain_batch"])
        if rb:
            ids, att, labels = ctx.batch(rb)
            out = out + s["retain_weight"] * answer_nll(ctx.model, ids, att, labels).mean()
        return out

    return loss


@register
class GradDiff:
    name = "grad_diff"
    defaults = {**BASELINE_DEFAULTS, "retain_weight": 1.0}

    def run(self, ctx) -> dict:
        s = {**self.defaults, **ctx.settings}
        return full_param_loop(ctx, grad_diff_objective(ctx, s), s)
