"""Retain repair, when the push ends (target reached or step budget used).

The push can flip a few retained MCQ items whose distractor is a forget answer (demo KB, anxiety:
"which investigation best supports ..." items now predicting an anxiety scale); the hold loss sees
them only in a random batch now and then and only holds the correct token. Here, on the same
masked weights: the retained items (seeded sample of ``at_risk_pool``) that the original model
answered correctly and the unlearned one does not are trained back by descending their option
cross-entropy (raise the correct option, lower the distractor that beats it) plus the usual hold
batch, with the components along the gradients of the forget and calibration mean answer losses
removed. After every step the stop rule is re-checked; the last state that passes is kept, so the
repair never undoes forgetting. At most ``repair_steps`` steps of norm ``repair_step_norm``.
"""

from __future__ import annotations

from hdsu_core.encoding import collate
from hdsu_core.losses import answer_nll, option_cross_entropy, option_margins
from hdsu_core.methods.base import Cancelled
from hdsu_core.methods.hdsu.geometry import project_out
from hdsu_core.methods.hdsu.state import HDSUState

GUARD_ITEMS = 256  # forget / calibration items in each guard loss (a seeded sample when more)
FIX_ITEMS = 64  # damaged items in each repair loss (a seeded sample when more)


def repair_retain(st: HDSUState, step: int) -> dict:
    """Repair from stop-rule step ``step``; returns the repair's counts for the run info."""
    watch, damaged = find_damaged(st)
    info = {
        "repair_damaged_before": len(damaged),
        "repair_damaged_after": len(damaged),
        "repair_steps": 0,
        "repair_reverted": False,
    }
    if not damaged:
        return info
    stop, s, ctx = st.stop, st.s, st.ctx
    # A repair state is kept only if the forget side is no worse than the stop rule asks or than
    # it was when the repair began (a run that ended on its step budget short of the target still
    # gets its retained items back, without moving further from the target).
    if stop.reason != "reached_target":
        stop.check(step)
    assert stop.last_auc is not None  # measured: the repair runs only with calibration items
    start = (stop.last_auc, stop.last_forget_acc)
    good = st.weights.snapshot()
    guards = guard_batches(st)
    st.model.train()
    r = 0
    while r < s["repair_steps"]:
        if ctx.should_cancel():
            raise Cancelled()
        if not st.weights.apply(project_out(repair_grad(st, damaged), guard_grads(st, guards)), s["repair_step_norm"]):
            break
        r += 1
        st.model.eval()
        if not forget_side_ok(st, step + r, *start):
            break
        good = st.weights.snapshot()
        info["repair_steps"] = r
        damaged = still_damaged(st, watch)
        info["repair_damaged_after"] = len(damaged)
        st.model.train()
        if not damaged:
            break
    if info["repair_steps"] != r:  # the last step broke the forget target: back to the last good state
        st.weights.restore(good)
        info["repair_reverted"] = True
        st.model.eval()
        stop.check(step + info["repair_steps"])
    return info


def find_damaged(st: HDSUState) -> tuple[list, list]:
    """(watched, damaged) retained items: among a seeded sample, those the original model answers
    correctly and the unlearned one no longer does (damaged) or answers within
    ``repair_watch_margin`` nats of flipping (watched: only these are re-scored after each step)."""
    ctx, s = st.ctx, st.s
    rows = sorted(ctx.rng.sample(range(len(ctx.retain)), min(s["at_risk_pool"], len(ctx.retain))))
    retained = [ctx.retain[i] for i in rows]
    before = option_margins(ctx.ref_model, ctx.tok, retained, ctx.max_len)
    now = option_margins(st.model, ctx.tok, retained, ctx.max_len)
    watch = [it for it, b, m in zip(retained, before, now) if b > 0 and m < s["repair_watch_margin"]]
    damaged = [it for it, b, m in zip(retained, before, now) if b > 0 and m <= 0]
    return watch, damaged


def still_damaged(st: HDSUState, watch: list) -> list:
    ctx = st.ctx
    return [it for it, m in zip(watch, option_margins(st.model, ctx.tok, watch, ctx.max_len)) if m <= 0]


def forget_side_ok(st: HDSUState, step: int, auc0: float, facc0: float | None) -> bool:
    """Re-check the stop rule; True when the forget side is no worse than the target or than at
    the start of the repair (reaching the target implies both conditions). The repair runs only
    with calibration items, so the check always measures an AUC (and, with ``facc0``, MCQ)."""
    stop = st.stop
    stop.check(step)
    assert stop.last_auc is not None
    auc_ok = stop.last_auc <= max(st.s["stop_auc"], auc0)
    if facc0 is None:
        return auc_ok
    assert stop.last_forget_acc is not None and stop.last_calib_acc is not None
    return auc_ok and stop.last_forget_acc <= max(stop.last_calib_acc, facc0)


def capped(st: HDSUState, items: list, n: int) -> list:
    """At most n items (a seeded sample when more), so a step costs the same on 20 or 2,000."""
    return items if len(items) <= n else st.ctx.rng.sample(items, n)


def guard_batches(st: HDSUState) -> list[tuple]:
    ctx = st.ctx
    return [
        collate(capped(st, ctx.forget_enc, GUARD_ITEMS), ctx.tok.pad_token_id, ctx.device),
        collate(capped(st, ctx.calib_enc, GUARD_ITEMS), ctx.tok.pad_token_id, ctx.device),
    ]


def repair_grad(st: HDSUState, damaged: list):
    """Gradient of the damaged items' option cross-entropy plus a retain batch's answer NLL."""
    ctx = st.ctx
    fix = option_cross_entropy(st.model, ctx.tok, capped(st, damaged, FIX_ITEMS), ctx.max_len).mean()
    rb = ctx.retain_batch(st.s["retain_batch"])
    if rb:
        r_ids, r_att, r_labels = collate(rb, ctx.tok.pad_token_id, ctx.device)
        fix = fix + answer_nll(st.model, r_ids, r_att, r_labels).mean()
    return st.weights.grad(fix)


def guard_grads(st: HDSUState, guards: list[tuple]) -> list:
    """Gradients of the mean answer loss of the forget items and of the calibration non-members:
    held fixed to first order, since the forget items must not come back and the non-members must
    not get easier either (both would move the membership AUC)."""
    return [st.weights.grad(answer_nll(st.model, ids, att, labels).mean()) for ids, att, labels in guards]
