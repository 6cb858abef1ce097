"""SimNPO baseline (Fan et al. 2024, "Simplicity prevails: rethinking negative preference
optimization for LLM unlearning"), open-unlearning's recipe on all parameters:

    L = gamma * L_SimNPO(forget) + alpha * NLL(retain),
    L_SimNPO = -(2/beta) * mean_i log sigmoid(beta * (NLL_i / |y_i| - delta))   (losses.simnpo_loss)

with open-unlearning's defaults (configs/trainer/SimNPO.yaml): beta 4.5, gamma 0.125 (the
forget term's weight, ``npo_coeff`` in the SimNPO authors' code), alpha 1.0 (the retain term's
weight), delta 0.0 (the reward margin, the paper's gamma). No reference model. The retain NLL is
the harness's (mean answer NLL per item, averaged over the batch, as in ``grad_diff`` and
``npo``; open-unlearning's is the token mean over the whole batch); lr, batches and the stop
rule are the harness's, as for every baseline (docs/method.md, "Fair comparison baselines")."""

from hdsu_core.losses import simnpo_loss
from hdsu_core.methods.base import (
    BASELINE_DEFAULTS,
    BASELINE_SCHEMA,
    forget_retain_objective,
    full_param_loop,
    register,
)
from hdsu_core.methods.schema import NON_NEGATIVE, POSITIVE


def simnpo_objective(ctx, s: dict):
    """gamma * SimNPO on a fresh forget batch + alpha * the retain NLL, per call."""

    def forget_term(ids, att, labels):
        return s["gamma"] * simnpo_loss(ctx.model, ids, att, labels, s["beta"], s["delta"])

    return forget_retain_objective(ctx, s, forget_term, s["alpha"])


@register
class SimNPO:
    name = "simnpo"
    defaults = {**BASELINE_DEFAULTS, "beta": 4.5, "gamma": 0.125, "alpha": 1.0, "delta": 0.0}
    schema = {**BASELINE_SCHEMA, "beta": POSITIVE, "gamma": POSITIVE, "alpha": NON_NEGATIVE, "delta": NON_NEGATIVE}

    def run(self, ctx) -> dict:
        s = {**self.defaults, **ctx.settings}
        return full_param_loop(ctx, simnpo_objective(ctx, s), s)
