"""Gradient ascent baseline: maximise the forget answers' NLL on all parameters."""

from hdsu_core.losses import answer_nll
from hdsu_core.methods.base import BASELINE_DEFAULTS, BASELINE_SCHEMA, full_param_loop, register, share_of_batch


@register
class GradAscent:
    name = "grad_ascent"
    defaults = dict(BASELINE_DEFAULTS)
    schema = dict(BASELINE_SCHEMA)

    def run(self, ctx) -> dict:
        s = {**self.defaults, **ctx.settings}

        def loss():
            fb = ctx.rng.sample(ctx.forget_enc, min(s["forget_batch"], len(ctx.forget_enc)))
            ctx.tokens_seen += sum(len(e.ids) for e in fb)
            return share_of_batch(ctx, fb, lambda ids, att, labels: -answer_nll(ctx.model, ids, att, labels).mean())

        return full_param_loop(ctx, loss, s)
