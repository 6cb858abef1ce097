"""Gradient ascent baseline: maximise the forget answers' NLL on all parameters."""

from hdsu_core.losses import answer_nll
from hdsu_core.methods.base import BASELINE_DEFAULTS, BASELINE_SCHEMA, full_param_loop, register


@register
class GradAscent:
    name = "grad_ascent"
    defaults = dict(BASELINE_DEFAULTS)
    schema = dict(BASELINE_SCHEMA)

    def run(self, ctx) -> dict:
        s = {**self.defaults, **ctx.settings}

        def loss():
            ids, att, labels = ctx.batch(ctx.rng.sample(ctx.forget_enc, min(s["forget_batch"], len(ctx.forget_enc))))
            return -answer_nll(ctx.model, ids, att, labels).mean()

        return full_param_loop(ctx, loss, s)
