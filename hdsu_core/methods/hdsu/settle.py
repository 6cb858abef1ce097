"""Settle, after the repair: over-forgetting is a membership signal too.

The push stops at the first check with calibration AUC <= stop_auc; the last bounded steps before
it and the repair (which lowers forget answers that are distractors of retained questions) can
leave the forget items well past the non-members, which an attacker reads as "these were removed".
When the calibration AUC is more than ``settle_margin`` below stop_auc, the forget items whose loss
is above the non-member median are pulled back (descend their mean answer NLL, without its
component against the retain gradient), ``settle_step_norm`` per step, until the calibration AUC is
back at stop_auc. A step after which the forget items are answered better than the non-members (the
MCQ half of the stop rule) is undone, and settling ends.
"""

from __future__ import annotations

import torch

from hdsu_core.encoding import collate
from hdsu_core.losses import answer_nll
from hdsu_core.methods.base import Cancelled
from hdsu_core.methods.hdsu.geometry import project_conflicting
from hdsu_core.methods.hdsu.state import HDSUState

SETTLE_ITEMS = 256  # over-forgotten items in each settle loss (the first ones)


def settle_forget(st: HDSUState, step: int) -> dict:
    """Settle from stop-rule step ``step``; returns the settle's counts for the run info."""
    stop, s, ctx = st.stop, st.s, st.ctx
    info = {"settle_steps": 0, "settle_reverted": False}
    stop.check(step)
    if stop.last_auc is None or stop.last_auc >= s["stop_auc"] - s["settle_margin"]:
        return info
    good = st.weights.snapshot()
    for r in range(1, s["settle_steps"] + 1):
        if ctx.should_cancel():
            raise Cancelled()
        over = over_forgotten(st)
        if not over:
            break
        st.model.train()
        g = pull_back_grad(st, over)
        st.model.eval()
        if not st.weights.apply(g, s["settle_step_norm"]):
            break
        stop.check(step + r)
        facc, cacc = stop.last_forget_acc, stop.last_calib_acc  # set together by every MCQ check
        if facc is not None and cacc is not None and facc > cacc:
            st.weights.restore(good)
            info["settle_reverted"] = True
            stop.check(step + r)
            break
        good = st.weights.snapshot()
        info["settle_steps"] = r
        if stop.last_auc >= s["stop_auc"]:
            break
    return info


def over_forgotten(st: HDSUState) -> list:
    """Forget items whose answer loss at the last check is above the non-member median."""
    stop = st.stop
    level = float(torch.tensor(stop.last_calib_losses).median())
    return [e for e, loss in zip(st.ctx.forget_enc, stop.last_forget_losses or []) if loss > level]


def pull_back_grad(st: HDSUState, over: list) -> torch.Tensor:
    """Gradient of the over-forgotten items' mean answer NLL without its component against a
    retain batch's answer-NLL gradient."""
    ctx = st.ctx
    f_ids, f_att, f_labels = collate(over[:SETTLE_ITEMS], ctx.tok.pad_token_id, ctx.device)
    g = st.weights.grad(answer_nll(st.model, f_ids, f_att, f_labels).mean())
    rb = ctx.retain_batch(st.s["retain_batch"])
    if rb:
        r_ids, r_att, r_labels = collate(rb, ctx.tok.pad_token_id, ctx.device)
        g = project_conflicting(g, st.weights.grad(answer_nll(st.model, r_ids, r_att, r_labels).mean()))
    return g
