"""The push loop: bounded, projected steps on the masked weights until the harness stop rule
fires (forget loss at the non-member level and forget MCQ accuracy no better than the
non-members', see base.StopRule), with item focus and the token-level push / hold losses."""

from __future__ import annotations

import torch

from hdsu_core import distributed
from hdsu_core.encoding import collate
from hdsu_core.losses import (
    answer_nll,
    kl_to_ref,
    next_token_logp,
    option_uniform_loss,
    pick_token_logprobs,
    retain_hold_with_kl,
    token_npo,
)
from hdsu_core.methods.hdsu.geometry import conflict_stats, damped_step_norm, update_direction
from hdsu_core.methods.hdsu.state import HDSUState


def push_until_stop(st: HDSUState) -> None:
    """Step until the stop rule says done; ``st.stop.reason`` says why it ended."""
    s = st.s
    st.model.train()
    while not st.stop.done(st.step):
        if st.step % s["check_every"] == 0:
            refresh_focus(st)
            st.at_risk.refresh(st.model)
            st.step_norm, st.last_side = damped_step_norm(st.step_norm, st.last_side, st.stop.last_auc, s)
        g_f, g_r = step_grads(st)
        st.push_stats.add(*conflict_stats(g_f, g_r))
        g, conflict = update_direction(g_f, g_r, s)
        st.conflicts += conflict
        if not st.weights.apply(g, st.step_norm):
            st.stop.reason = "zero_gradient"
            break
        st.step += 1


def refresh_focus(st: HDSUState) -> None:
    """Item focus (``forgotten_weight`` < 1; 0 by default): a forget item whose answer loss at the
    last check is past the ``focus_level`` quantile of the non-member losses and that is no
    longer answered correctly (MCQ) is pushed only with ``forgotten_weight``. The push goes to the
    items that still look memorised instead of driving the forgotten ones far past non-member
    level (itself a membership signal). The push loss keeps its full-set normaliser, so its
    gradient shrinks as items finish and the hold term gets the step."""
    stop, s = st.stop, st.s
    if stop.last_forget_losses is None or not stop.last_calib_losses or s["forgotten_weight"] >= 1:
        return
    level = float(torch.quantile(torch.tensor(stop.last_calib_losses), s["focus_level"]))
    f = torch.tensor(stop.last_forget_losses)
    done = f >= level
    if stop.last_forget_correct is not None:  # an item still answered correctly is not done
        done &= ~torch.tensor(stop.last_forget_correct)
    st.focus.copy_(torch.where(done, torch.full_like(f, s["forgotten_weight"]), torch.ones_like(f)))


def forget_rows(st: HDSUState) -> torch.Tensor:
    """The forget items of this step: all of them, or a seeded sample of ``forget_batch``, so a
    step costs the same on 20 or 2,000 forget items."""
    ctx, n = st.ctx, len(st.forget.ids)
    if n <= st.s["forget_batch"]:
        return torch.arange(n, device=ctx.device)
    return torch.tensor(sorted(ctx.rng.sample(range(n), st.s["forget_batch"])), device=ctx.device)


def step_grads(st: HDSUState) -> tuple[torch.Tensor, torch.Tensor]:
    """(g_f, g_r) on the masked weights: the gradient of the token-level NPO push on a forget
    minibatch, and of the hold (KL to the original on its preserve tokens + the retain answer NLL).
    Over several processes (distributed.py) every rank draws the same minibatches, takes its rows
    of them and divides by the normalisers of the whole batch; the flat gradients are summed."""
    ctx, fb = st.ctx, st.forget
    rows = forget_rows(st)
    width = int(fb.att[rows].sum(1).max())  # drop all-padding columns of this minibatch
    w_item_all = fb.push_w[:, 1:][rows, : width - 1]
    w_hold_all = fb.hold_w[:, 1:][rows, : width - 1]
    mine = distributed.shard(rows)
    g_f = torch.zeros(sum(int(m.sum()) for _, _, m in st.weights.masked), device=ctx.device)
    g_r = torch.zeros_like(g_f)
    if len(mine):
        g_f, g_r = _local_grads(st, mine, width, w_item_all, w_hold_all)
    options = option_rows(st, rows)
    mine_options = distributed.shard(options)
    if mine_options:
        g_f += _option_grad(st, mine_options, len(options))
    st.tokens_seen += int(fb.att[rows].sum()) + sum(len(e.ids) for e in st.at_risk.last_batch)
    return distributed.all_sum_(g_f), distributed.all_sum_(g_r)


def _local_grads(st: HDSUState, rows, width: int, w_item_all, w_hold_all) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's share of (g_f, g_r): its forget ``rows`` and its share of the hold batch,
    normalised by the whole batch's token weights (``w_item_all``, ``w_hold_all``) and sizes."""
    ctx, s, fb = st.ctx, st.s, st.forget
    ids, att = fb.ids[rows, :width], fb.att[rows, :width]
    w_item = fb.push_w[:, 1:][rows, : width - 1]
    w_hold = fb.hold_w[:, 1:][rows, : width - 1]
    logp = next_token_logp(st.model, ids, att)
    lp = pick_token_logprobs(logp, ids)
    push = token_npo(lp, st.lp_ref[rows, : width - 1], w_item * st.focus[rows].unsqueeze(1), w_item_all, s["beta"])
    hold = torch.zeros((), device=ctx.device)
    if st.need_kl and float(w_hold_all.sum()) > 0:
        with torch.no_grad():
            logq = next_token_logp(ctx.ref_model, ids, att)
        hold = hold + s["kl_weight"] * (kl_to_ref(logq, logp) * w_hold).sum() / w_hold_all.sum().clamp_min(1.0)
    rb_all = st.at_risk.hold_batch()
    rb = distributed.shard(rb_all)
    if rb:
        r_ids, r_att, r_labels = collate(rb, ctx.tok.pad_token_id, ctx.device)
        if s["retain_kl_weight"] > 0:
            hold = hold + retain_hold_with_kl(
                st.model, ctx.ref_model, r_ids, r_att, r_labels, s["retain_kl_weight"], totals=_hold_totals(rb_all)
            )
        else:
            hold = hold + distributed.shard_mean(answer_nll(st.model, r_ids, r_att, r_labels), len(rb_all))
    g_f = st.weights.grad(push, retain_graph=True)
    g_r = st.weights.grad(hold) if hold.requires_grad else torch.zeros_like(g_f)
    return g_f, g_r


def option_rows(st: HDSUState, rows: torch.Tensor) -> list[int]:
    """The forget items of this minibatch that the option push works on: the first
    ``option_batch`` that item focus still pushes (none when ``option_weight`` is 0)."""
    if st.s["option_weight"] <= 0:
        return []
    return [int(i) for i in rows if float(st.focus[i]) > 0][: st.s["option_batch"]]


def _option_grad(st: HDSUState, mine: list[int], n_total: int) -> torch.Tensor:
    """``option_weight`` x the gradient of the mean option-uniform loss on the masked weights:
    over this rank's ``mine`` of ``n_total`` option items (their share of the mean; the caller
    sums over the ranks)."""
    ctx = st.ctx
    loss = option_uniform_loss(st.model, ctx.tok, [ctx.forget[i] for i in mine], ctx.max_len)
    return st.weights.grad(st.s["option_weight"] * distributed.shard_mean(loss, n_total))


def _hold_totals(rb_all) -> tuple[int, int] | None:
    """(items, answer positions) of the whole hold batch, the means' denominators over several
    processes; None in one process (plain means)."""
    if not distributed.splits_data():
        return None
    return len(rb_all), sum(len(e.ids) - e.answer_start for e in rb_all)
