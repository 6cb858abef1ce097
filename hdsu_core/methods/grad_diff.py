"""GradDiff baseline: ascent on the forget answers plus descent on retain answers (all parameters)."""

from hdsu_core.losses import answer_nll
from hdsu_core.methods.base import (
    BASELINE_DEFAULTS,
    BASELINE_SCHEMA,
    forget_retain_objective,
    full_param_loop,
    register,
)
from hdsu_core.methods.schema import NON_NEGATIVE


def grad_diff_objective(ctx, s: dict):
    """The GradDiff objective on a fresh forget and retain batch per call (shared with the masked variant)."""
    return forget_retain_objective(
        ctx, s, lambda ids, att, labels: -answer_nll(ctx.model, ids, att, labels).mean(), s["retain_weight"]
    )


@register
class GradDiff:
    name = "grad_diff"
    defaults = {**BASELINE_DEFAULTS, "retain_weight": 1.0}
    schema = {**BASELINE_SCHEMA, "retain_weight": NON_NEGATIVE}

    def run(self, ctx) -> dict:
        s = {**self.defaults, **ctx.settings}
        return full_param_loop(ctx, grad_diff_objective(ctx, s), s)
