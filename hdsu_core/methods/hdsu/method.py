"""HDSU's phases in order: token weights -> mask -> push -> retain repair -> settle."""

from __future__ import annotations

import hashlib
import time

import torch

from hdsu_core import distributed
from hdsu_core.losses import token_logprobs
from hdsu_core.methods.base import StopRule, UnlearnContext, register, step_seconds
from hdsu_core.methods.hdsu.geometry import MaskedWeights
from hdsu_core.methods.hdsu.push import push_until_stop
from hdsu_core.methods.hdsu.repair import repair_retain
from hdsu_core.methods.hdsu.settings import DEFAULTS, LORA_DEFAULTS, SCHEMA
from hdsu_core.methods.hdsu.settle import settle_forget
from hdsu_core.methods.hdsu.shared_mask import batch_and_mask
from hdsu_core.methods.hdsu.state import AtRiskRetain, HDSUState

ENDS_WITH_REPAIR = ("reached_target", "max_steps")  # stop reasons after which repair and settle run


@register
class HDSU:
    name = "hdsu"
    defaults = DEFAULTS
    lora_defaults = LORA_DEFAULTS
    schema = SCHEMA

    def run(self, ctx: UnlearnContext) -> dict:
        s = {**self.defaults, **ctx.settings}
        torch.manual_seed(ctx.seed)
        t0 = time.time()
        params = [(n, p) for n, p in ctx.model.named_parameters() if p.requires_grad]
        st = prepare(ctx, s, params)
        try:
            t_push = time.perf_counter()
            push_until_stop(st)
            # One push step: the push loop's wall time less the stop rule's (checks, cancel polls).
            per_step = step_seconds(time.perf_counter() - t_push, st.stop.check_seconds, st.step)
            finish(st)
        finally:
            for _, p in params:
                p.requires_grad_(True)
        ctx.model.zero_grad(set_to_none=True)
        ctx.model.eval()
        return {**run_info(st, params, t0), "step_seconds": per_step}


def prepare(ctx: UnlearnContext, s: dict, params: list) -> HDSUState:
    """Token weights, the Fisher-scored mask (only masked tensors keep gradients from here on:
    cheaper backward passes), the reference log-probs and the stop rule."""
    fb, masks, k, total = batch_and_mask(ctx, s, params)
    for n, p in params:
        p.requires_grad_(n in masks)
    weights = MaskedWeights([(n, p, masks[n]) for n, p in params if n in masks])
    # The reference model is frozen: its token log-probs on the forget set are computed once.
    with torch.no_grad():
        lp_ref = torch.cat(
            [
                token_logprobs(ctx.ref_model, fb.ids[b : b + 128], fb.att[b : b + 128])
                for b in range(0, len(fb.ids), 128)
            ]
        )
    need_kl = s["kl_weight"] > 0 and float(fb.hold_w.sum()) > 0
    focus = torch.ones(len(fb.ids), device=ctx.device)
    at_risk = AtRiskRetain(ctx, s)
    stop = StopRule(ctx, s["check_every"], s["max_steps"], s["time_budget_s"], s["stop_auc"], s["stop_mcq"])
    return HDSUState(ctx, s, fb, weights, k, total, lp_ref, at_risk, stop, focus, need_kl, step_norm=s["step_norm"])


def finish(st: HDSUState) -> None:
    """Retain repair, then settle, when the push ended on the target or the step budget."""
    s, ctx, reason = st.s, st.ctx, st.stop.reason
    if s["repair_steps"] > 0 and reason in ENDS_WITH_REPAIR and ctx.retain and ctx.calib_enc:
        st.info = repair_retain(st, st.step)
    if s["settle_steps"] > 0 and reason in ENDS_WITH_REPAIR and ctx.calib_enc:
        st.info = {**st.info, **settle_forget(st, st.step + st.info["repair_steps"])}


def run_info(st: HDSUState, params: list, t0: float) -> dict:
    stop = st.stop
    return {
        "steps": st.step,
        "stopped": stop.reason,
        "forget_loss": stop.last_forget_loss,
        "target_loss": st.ctx.target_loss,
        "calibration_auc": stop.last_auc,
        "stop_forget_mcq_acc": stop.last_forget_acc,
        "stop_calib_mcq_acc": stop.last_calib_acc,
        "mask_size": st.k,
        "mask_fraction": st.k / st.total,
        "mask_by_param": {n: int(m.sum()) for n, _, m in st.weights.masked},
        "conflicting_steps": st.conflicts,
        "at_risk_held_max": st.at_risk.seen_max,
        **st.push_stats.summary(),
        **st.info,
        "token_roles": st.forget.role_counts,
        "method_seconds": round(time.time() - t0, 2),
        "mask_sha256": mask_sha256({n: m for n, _, m in st.weights.masked}),
        "step_tokens": st.tokens_seen / st.step if st.step else None,
        "processes": distributed.world(),
    }


def mask_sha256(masks: dict[str, torch.Tensor]) -> str:
    """sha256 over (tensor name, flat indices of its masked weights) in name order: two runs with
    the same hash changed the very same weights (e.g. one process and several, distributed.py)."""
    h = hashlib.sha256()
    for n in sorted(masks):
        m = masks[n]
        h.update(n.encode() + b"\0" + m.flatten().nonzero().flatten().cpu().numpy().astype("<i8").tobytes())
    return h.hexdigest()
