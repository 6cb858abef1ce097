"""HDSU: hierarchical dual-strategy unlearning (method of arXiv 2511.19498; equations in docs/method.md).

1. Geometric-constrained gradient updates
   - importance s_j = F_forget,j / (F_retain,j + delta), F = mean squared micro-batch gradient
     (empirical Fisher) of the push loss on the forget set and of the NLL on the retain set;
     delta = damping * mean(F_retain) so rarely-used weights are not picked on noise alone;
   - mask M of ``mask_fraction`` of all weights (default 0.1 %); only these ever change. With
     ``mask_allocation`` per_item (default) each forget item first gets its own k/n top weights by
     its own score, the rest of the budget goes by the pooled score, so no item is left without
     weights that can move it;
   - per step, on the masked coordinates: g_f = grad of the push loss, g_r = grad of the hold loss;
     if <g_f, g_r> < 0 (descending g_f would raise the retain loss) remove the conflicting
     component, g_f' = g_f - (<g_f,g_r>/|g_r|^2) g_r; direction d = g_f' + alpha g_r, which has
     <d, g_r> >= 0, so the step theta -= eta d never raises the hold loss to first order;
   - bounded step: |eta d| = step_norm (normalised gradient step), halved (down to
     min_step_share x step_norm) each time the calibration AUC crosses stop_auc between checks;
   - retain repair when the run ends (target reached or step budget used): retained items the
     original model answered and the unlearned one no longer does are trained back on the mask,
     orthogonally to the forget and calibration loss gradients, re-checking the forget side after
     every step and undoing a step that weakens it;
   - settle after the repair: when the forget items ended up well past the non-members (itself a
     membership signal), the over-forgotten ones are pulled back to the non-member level.
2. Concept-aware token-level intervention
   - every token of a forget item gets a role from the hierarchy: ``answer`` (forget answer),
     ``target`` (a term of a targeted concept), ``preserve`` (a term of a preservation-critical
     concept: L1-L2 ancestors and every unselected concept) or ``template`` (everything else);
   - push weights: answer 1, target ``concept_weight``, preserve 0, template 0 (no push);
   - hold: preserve tokens are anchored to the original model with KL, retain answers with NLL.
   - item focus: forget items already past non-member loss level and answered wrongly get no push.
Stops with the harness rule: forget loss reaches the non-member loss level and forget MCQ
accuracy the non-members' accuracy (see base.StopRule).
"""

from __future__ import annotations

import re
import time

import torch

from hdsu_core.encoding import Encoded, collate
from hdsu_core.losses import (
    answer_logits,
    answer_nll,
    answer_nll_from_logp,
    option_cross_entropy,
    option_margins,
    token_logprobs,
)
from hdsu_core.methods.base import STOP_MCQ_DEFAULT, Cancelled, StopRule, item_answer_losses, register
from hdsu_core.tagging import TermIndex

ROLE_PUSH = {"answer": 1.0, "target": None, "answer_shared": None, "preserve": 0.0, "template": 0.0}


def token_roles(
    enc: Encoded, term_index: TermIndex, targeted: set[str], retain_answer_tokens: set[int] | None = None
) -> list[str]:
    """Role of each token of an encoded QA item (see module docstring). A term shared by a targeted
    and a preserved concept counts as preserved: when in doubt, do not push. Inside the forget
    answer, a preserved term or a token that also occurs in retained answers is ``answer_shared``:
    the fact is still pushed, but softly, because the token carries preserved knowledge too."""
    spans = []
    for s, e, _term, cids in term_index.spans(enc.text):
        if any(c not in targeted for c in cids):
            spans.append((s, e, "preserve"))
        else:
            spans.append((s, e, "target"))
    roles = []
    for t, (s, e) in enumerate(enc.offsets):
        role = None
        if e > s:
            for ss, se, r in spans:
                if s < se and ss < e:
                    role = r
                    break
        if t >= enc.answer_start and role != "target":
            shared = role == "preserve" or (retain_answer_tokens is not None and enc.ids[t] in retain_answer_tokens)
            role = "answer_shared" if shared else "answer"
        elif role is None:
            role = "template"
        roles.append(role)
    return roles


def role_weights(
    roles: list[str], concept_weight: float, shared_answer_weight: float = 0.3
) -> tuple[list[float], list[float]]:
    """Push and hold weight per token: answer 1, answer_shared ``shared_answer_weight``, target
    ``concept_weight``, preserve and template 0; hold 1 on preserve tokens only."""
    weights = {**ROLE_PUSH, "target": concept_weight, "answer_shared": shared_answer_weight}
    push = [weights[r] for r in roles]
    hold = [1.0 if r == "preserve" else 0.0 for r in roles]
    return push, hold


def project_conflicting(g_f: torch.Tensor, g_r: torch.Tensor) -> torch.Tensor:
    """Remove from g_f its component against g_r when they conflict (<g_f, g_r> < 0).
    Afterwards <g, g_r> >= 0: a descent step along -g does not increase the retain loss to first order."""
    dot = torch.dot(g_f, g_r)
    nr = torch.dot(g_r, g_r)
    if dot < 0 and nr > 0:
        return g_f - (dot / nr) * g_r
    return g_f


def project_out(g: torch.Tensor, directions: list[torch.Tensor]) -> torch.Tensor:
    """g without its components in the span of ``directions`` (Gram-Schmidt): afterwards
    <g, v> = 0 for every v, so a step along g leaves each of those losses unchanged to first order."""
    basis: list[torch.Tensor] = []
    for v in directions:
        for b in basis:
            v = v - torch.dot(v, b) * b
        if v.norm() > 0:
            basis.append(v / v.norm())
    for b in basis:
        g = g - torch.dot(g, b) * b
    return g


def _pad(rows: list[list[float]], n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    out = torch.zeros((len(rows), n), device=device)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, device=device)
    return out


def token_npo_loss(model, ref_model, ids, att, weights: torch.Tensor, beta: float) -> torch.Tensor:
    """Token-level NPO: (2/beta) * sum_t w_t softplus(beta * (log p_t - log p_ref_t)) / sum_t w_t.
    Per token rather than per sequence, so a concept-name token that drops quickly does not
    saturate the item and stall the push on its answer tokens; each token's push fades on its own
    once it is well below the original model."""
    lp = token_logprobs(model, ids, att)
    with torch.no_grad():
        lp_ref = token_logprobs(ref_model, ids, att)
    w = weights[:, 1:].to(lp.device)
    return (2.0 / beta) * (torch.nn.functional.softplus(beta * (lp - lp_ref)) * w).sum() / w.sum().clamp_min(1e-6)


def retain_hold_with_kl(model, ref_model, ids, att, labels, kl_weight: float) -> torch.Tensor:
    """Mean per-item answer NLL of retain items plus ``kl_weight`` x the mean KL(p_ref || p_theta)
    of the next-token distribution at their answer positions. The NLL only holds the correct
    token; the KL also holds what the original model did *not* predict there, e.g. a forget
    answer that is a distractor of a retained question must not become more likely for it."""
    mask = labels[:, 1:] != -100
    logp = torch.log_softmax(answer_logits(model, ids, att, mask), -1)
    with torch.no_grad():
        logq = torch.log_softmax(answer_logits(ref_model, ids, att, mask), -1)
    kl = (logq.exp() * (logq - logp)).sum(-1).mean()
    return answer_nll_from_logp(logp, ids, mask).mean() + kl_weight * kl


def kl_to_ref(model, ref_model, ids, att, weights: torch.Tensor) -> torch.Tensor:
    """Weighted KL(p_ref || p_theta) of next-token distributions at the weighted positions."""
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=att).logits[:, :-1].float(), -1)
    with torch.no_grad():
        logq = torch.log_softmax(ref_model(input_ids=ids, attention_mask=att).logits[:, :-1].float(), -1)
    kl = (logq.exp() * (logq - logp)).sum(-1)
    w = weights[:, 1:].to(kl.device)
    return (kl * w).sum() / w.sum().clamp_min(1.0)


def select_mask(ctx, model, params, push_loss, s: dict) -> tuple[dict, int, int]:
    """Importance-scored update mask (docs/method.md, section 2). Returns ({param name: bool
    mask}, k, total weights). The retain Fisher comes first so that, with ``mask_allocation``
    ``per_item``, each forget item's own gradient can be scored against it as it streams by."""
    model.eval()
    total = sum(p.numel() for _, p in params)
    # Rounded down: the mask never exceeds the fraction (rounding up broke "<= 0.1 %" by one weight).
    k = max(1, int(s["mask_fraction"] * total))
    # Fisher sums in float32 whatever the weights' precision (bfloat16 would round them away).
    f_retain = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params}
    sample = ctx.rng.sample(ctx.retain_enc, min(s["fisher_retain_items"], len(ctx.retain_enc)))
    nb, rfb = 0, s["fisher_retain_batch"]
    for b in range(0, len(sample), rfb):
        model.zero_grad(set_to_none=True)
        ids, att, labels = collate(sample[b : b + rfb], ctx.tok.pad_token_id, ctx.device)
        answer_nll(model, ids, att, labels).mean().backward()
        for n, p in params:
            if p.grad is not None:
                f_retain[n] += p.grad.detach().float() ** 2
        nb += 1
    for n in f_retain:
        f_retain[n] /= max(nb, 1)
    mean_r = torch.cat([f.flatten() for f in f_retain.values()]).mean()
    denom = {n: f_retain[n] + s["damping"] * mean_r + 1e-20 for n in f_retain}
    del f_retain
    allowed = re.compile(s["mask_params"]) if s["mask_params"] else None
    eligible = {n: allowed is None or bool(allowed.search(n)) for n, _ in params}

    if s["mask_allocation"] not in ("global", "per_item"):
        raise ValueError(f"mask_allocation must be 'global' or 'per_item', not {s['mask_allocation']!r}")
    per_item = s["mask_allocation"] == "per_item"
    fisher_rows = list(range(len(ctx.forget_enc)))
    if len(fisher_rows) > s["fisher_forget_items"]:  # a seeded sample, not a (possibly sorted) prefix
        fisher_rows = sorted(ctx.rng.sample(fisher_rows, s["fisher_forget_items"]))
    fb = 1 if per_item else s["fisher_batch"]
    k_item = max(1, k // max(len(fisher_rows), 1)) if per_item else 0
    f_forget = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params}
    chosen: set[int] = set()
    nb = 0
    for b in range(0, len(fisher_rows), fb):
        model.zero_grad(set_to_none=True)
        push_loss(torch.tensor(fisher_rows[b : b + fb], device=ctx.device)).backward()
        item_scores = []
        for n, p in params:
            g2 = p.grad.detach().float() ** 2 if p.grad is not None else torch.zeros_like(p, dtype=torch.float32)
            f_forget[n] += g2
            if per_item:
                item_scores.append(
                    (g2 / denom[n]).flatten() if eligible[n] else torch.zeros(p.numel(), device=p.device)
                )
        if per_item:
            chosen.update(torch.topk(torch.cat(item_scores), k_item).indices.tolist())
        nb += 1
    model.zero_grad(set_to_none=True)
    scores = torch.cat(
        [
            (f_forget[n] / max(nb, 1) / denom[n]).flatten() if eligible[n] else torch.zeros(p.numel(), device=p.device)
            for n, p in params
        ]
    )
    del f_forget, denom
    flat_mask = torch.zeros(total, dtype=torch.bool, device=scores.device)
    if chosen:
        # Every forget item keeps its own few most specific weights (overlaps merge); the rest of
        # the budget goes by the pooled score. Trim by pooled score if the union overshoots k.
        idx = torch.tensor(sorted(chosen), device=scores.device)
        if len(idx) > k:
            idx = idx[torch.topk(scores[idx], k).indices]
        flat_mask[idx] = True
    rest = k - int(flat_mask.sum())
    if rest > 0:
        scores[flat_mask] = -1.0
        flat_mask[torch.topk(scores, rest).indices] = True
    masks, off = {}, 0
    for n, p in params:
        m = flat_mask[off : off + p.numel()].view_as(p)
        off += p.numel()
        if m.any():
            masks[n] = m
    return masks, k, total


@register
class HDSU:
    name = "hdsu"
    defaults = {
        "mask_fraction": 0.001,  # fraction of all weights that may change
        "damping": 1.0,  # delta = damping * mean(F_retain)
        "step_norm": 3.0,  # L2 norm of every update (bounded step)
        "retain_weight": 3.0,  # alpha: weight of the hold gradient in the direction
        "concept_weight": 0.2,  # push weight of targeted-concept term tokens
        "kl_weight": 1.0,  # weight of the KL hold on preserve tokens
        "beta": 0.2,  # NPO temperature of the push loss
        "fisher_batch": 4,  # micro-batch size for the empirical Fisher
        "fisher_forget_items": 1024,  # forget items scored for the Fisher (seeded sample when more)
        "fisher_retain_items": 2000,
        "forget_batch": 64,  # forget items per update step (all when fewer)
        "fisher_retain_batch": 16,
        "mask_params": "",  # regex restricting which weight tensors may be masked ("" = all)
        "mask_allocation": "per_item",  # "per_item": each forget item first gets its own k/n weights; "global": pooled top-k
        "retain_batch": 128,
        "retain_kl_weight": 0.0,  # KL to the original model at retain answer positions, added to the retain NLL
        "hold_at_risk": 0,  # opt-in: this many retain items whose loss rose most join every hold batch
        "at_risk_margin": 0.1,  # ... when their answer loss rose more than this (nats) above the original
        "at_risk_pool": 2000,  # retain items watched for that (seeded sample when more)
        "step_decay": 0.5,  # the step norm is multiplied by this when the calibration AUC crosses stop_auc
        "min_step_share": 0.1,  # ... down to this share of step_norm
        "repair_steps": 30,  # retain repair after the target is reached (0 = off)
        "repair_step_norm": 0.3,  # L2 norm of every repair update
        "repair_watch_margin": 2.0,  # retained items within this many nats of flipping are watched
        "settle_steps": 20,  # settle after the repair: pull over-forgotten items back (0 = off) ...
        "settle_margin": 0.03,  # ... when the calibration AUC is this far below stop_auc ...
        "settle_step_norm": 0.3,  # ... in steps of this L2 norm, until it is back at stop_auc
        "max_steps": 300,
        "check_every": 5,
        "time_budget_s": 900.0,  # budget: safety net only
        "stop_auc": 0.5,  # stop when forget-vs-calibration MIA AUC reaches this ...
        "stop_mcq": STOP_MCQ_DEFAULT,  # ... and forget MCQ accuracy is no better than the non-members'
        "focus_level": 0.5,  # item focus: an item is forgotten past this quantile of non-member losses
        "shared_answer_weight": 1.0,  # push on answer tokens that also occur in retain answers
        "forgotten_weight": 0.0,  # item focus: push weight of forget items already forgotten (1 = off)
        "projection": True,  # ablation switch: geometric constraint on/off
        "token_level": True,  # ablation switch: concept-aware token weights on/off
    }

    def run(self, ctx) -> dict:
        s = {**self.defaults, **ctx.settings}
        torch.manual_seed(ctx.seed)
        t0 = time.time()
        model = ctx.model
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

        # ---- token roles from the hierarchy --------------------------------------------------
        index = TermIndex(ctx.hierarchy) if ctx.hierarchy is not None else None
        # Answer tokens that also occur in retained answers carry preserved knowledge: not pushed
        # (or only with shared_answer_weight); the distinctive tokens of a forget answer suffice.
        retain_answer_tokens = (
            {i for e in ctx.retain_enc for i in e.ids[e.answer_start :]} if s["token_level"] else set()
        )
        push_rows, hold_rows = [], []
        role_counts = {"answer": 0, "answer_shared": 0, "target": 0, "preserve": 0, "template": 0}
        for enc in ctx.forget_enc:
            if s["token_level"] and index is not None:
                roles = token_roles(enc, index, ctx.targeted, retain_answer_tokens)
            else:
                roles = ["answer" if t >= enc.answer_start else "template" for t in range(len(enc.ids))]
            for r in roles:
                role_counts[r] += 1
            pw, hw = role_weights(roles, s["concept_weight"], s["shared_answer_weight"])
            push_rows.append(pw)
            hold_rows.append(hw)
        ids_f, att_f, _ = collate(ctx.forget_enc, ctx.tok.pad_token_id, ctx.device)
        push_w = _pad(push_rows, ids_f.shape[1], ctx.device)
        hold_w = _pad(hold_rows, ids_f.shape[1], ctx.device)

        def push_loss(idx=None):
            sl = slice(None) if idx is None else idx
            return token_npo_loss(model, ctx.ref_model, ids_f[sl], att_f[sl], push_w[sl], s["beta"])

        # ---- parameter importance (empirical Fisher) and mask ----------------------------------
        ctx.progress("unlearn", 0.0, "scoring parameters (Fisher forget vs retain)")
        masks, k, total = select_mask(ctx, model, params, push_loss, s)
        masked = [(n, p, masks[n]) for n, p in params if n in masks]
        mask_by_param = {n: int(m.sum()) for n, m in masks.items()}

        # Only masked tensors need gradients from here on: cheaper backward passes.
        for n, p in params:
            p.requires_grad_(n in masks)
        masked_params = [p for _, p, _ in masked]
        # The reference model is frozen: its token log-probs on the forget set are computed once.
        # Each step then works on a minibatch of at most ``forget_batch`` forget items (all of them
        # when the set is small), so a step costs the same on 20 or 2,000 forget items.
        with torch.no_grad():
            lp_ref_f = torch.cat(
                [
                    token_logprobs(ctx.ref_model, ids_f[b : b + 128], att_f[b : b + 128])
                    for b in range(0, len(ids_f), 128)
                ]
            )
        need_kl = s["kl_weight"] > 0 and float(hold_w.sum()) > 0
        w_push_all = push_w[:, 1:]
        w_hold_all = hold_w[:, 1:]
        n_forget = len(ids_f)
        # Item focus (forgotten_weight < 1; 0 by default): at every stop-rule check, a forget item
        # whose answer loss is past the ``focus_level`` quantile of the non-member losses and that
        # is no longer answered correctly (MCQ) is pushed only with ``forgotten_weight``. The push
        # goes to the items that still look memorised instead of driving the forgotten ones far
        # past non-member level (itself a membership signal). The push loss keeps its full-set
        # normaliser, so its gradient shrinks as items finish and the hold term gets the step.
        focus = torch.ones(n_forget, device=ctx.device)

        def refresh_focus() -> None:
            if stop.last_forget_losses is None or not stop.last_calib_losses or s["forgotten_weight"] >= 1:
                return
            level = float(torch.quantile(torch.tensor(stop.last_calib_losses), s["focus_level"]))
            f = torch.tensor(stop.last_forget_losses)
            done = f >= level
            if stop.last_forget_correct is not None:  # an item still answered correctly is not done
                done &= ~torch.tensor(stop.last_forget_correct)
            focus.copy_(torch.where(done, torch.full_like(f, s["forgotten_weight"]), torch.ones_like(f)))

        # At-risk retain items: at every check, the retain items (a fixed seeded sample of at most
        # ``at_risk_pool``) whose answer loss rose more than ``at_risk_margin`` nats above the
        # original model's are put into every hold batch (at most ``hold_at_risk`` of them, the
        # largest rises first); the rest of the batch is sampled as before. The push damages a few
        # retained items that share a question template with forget items (on the demo KB: the
        # "which investigation best supports ..." items when anxiety is forgotten); a random batch
        # of 128 of ~330 sees each of them only every few steps.
        pool = (
            ctx.rng.sample(ctx.retain_enc, min(s["at_risk_pool"], len(ctx.retain_enc))) if s["hold_at_risk"] > 0 else []
        )
        pool_ref = torch.tensor(item_answer_losses(ctx.ref_model, ctx.tok, pool)) if pool else None
        at_risk: list = []
        at_risk_seen = [0]  # the most at-risk items held at once (reported)

        def refresh_at_risk() -> None:
            if not pool:
                return
            rise = torch.tensor(item_answer_losses(model, ctx.tok, pool)) - pool_ref
            order = torch.argsort(rise, descending=True)[: s["hold_at_risk"]]
            at_risk[:] = [pool[int(i)] for i in order if float(rise[i]) > s["at_risk_margin"]]
            at_risk_seen[0] = max(at_risk_seen[0], len(at_risk))

        def hold_batch() -> list:
            if not at_risk:
                return ctx.retain_batch(s["retain_batch"])
            rest = ctx.retain_batch(max(0, s["retain_batch"] - len(at_risk)))
            return at_risk + rest

        def forget_rows() -> torch.Tensor:
            if n_forget <= s["forget_batch"]:
                return torch.arange(n_forget, device=ctx.device)
            return torch.tensor(sorted(ctx.rng.sample(range(n_forget), s["forget_batch"])), device=ctx.device)

        def flat(grads) -> torch.Tensor:  # float32: projections and norms need the precision
            return torch.cat(
                [
                    (g[m].float() if g is not None else torch.zeros(int(m.sum()), device=m.device))
                    for g, (_, _, m) in zip(grads, masked)
                ]
            )

        def step_grads() -> tuple[torch.Tensor, torch.Tensor]:
            rows = forget_rows()
            width = int(att_f[rows].sum(1).max())  # drop all-padding columns of this minibatch
            ids, att = ids_f[rows, :width], att_f[rows, :width]
            w_item = w_push_all[rows, : width - 1]
            w_push = w_item * focus[rows].unsqueeze(1)
            w_hold = w_hold_all[rows, : width - 1]
            logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
            logp = torch.log_softmax(logits, -1)
            lp = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            push = (
                (2.0 / s["beta"])
                * (torch.nn.functional.softplus(s["beta"] * (lp - lp_ref_f[rows, : width - 1])) * w_push).sum()
                / w_item.sum().clamp_min(1e-6)
            )
            hold = torch.zeros((), device=ctx.device)
            if need_kl and float(w_hold.sum()) > 0:
                with torch.no_grad():
                    logq = torch.log_softmax(
                        ctx.ref_model(input_ids=ids, attention_mask=att).logits[:, :-1].float(), -1
                    )
                kl = (logq.exp() * (logq - logp)).sum(-1)
                hold = hold + s["kl_weight"] * (kl * w_hold).sum() / w_hold.sum().clamp_min(1.0)
            rb = hold_batch()
            if rb:
                r_ids, r_att, r_labels = collate(rb, ctx.tok.pad_token_id, ctx.device)
                if s["retain_kl_weight"] > 0:
                    hold = hold + retain_hold_with_kl(
                        model, ctx.ref_model, r_ids, r_att, r_labels, s["retain_kl_weight"]
                    )
                else:
                    hold = hold + answer_nll(model, r_ids, r_att, r_labels).mean()
            g_f = flat(torch.autograd.grad(push, masked_params, retain_graph=True, allow_unused=True))
            if hold.requires_grad:
                g_r = flat(torch.autograd.grad(hold, masked_params, allow_unused=True))
            else:
                g_r = torch.zeros_like(g_f)
            return g_f, g_r

        def apply(g: torch.Tensor, norm_to: float) -> bool:
            """Step the masked weights by -g scaled to norm ``norm_to``; False (and no step) when
            the direction vanished or is not finite."""
            norm = g.norm()
            if norm == 0 or not torch.isfinite(norm):
                return False
            upd = g * (norm_to / norm)
            with torch.no_grad():
                off = 0
                for _, p, m in masked:
                    c = int(m.sum())
                    p[m] -= upd[off : off + c].to(p.dtype)
                    off += c
            return True

        def snapshot() -> list[torch.Tensor]:
            return [p.detach().clone() for p in masked_params]

        def restore(state: list[torch.Tensor]) -> None:
            with torch.no_grad():
                for p, saved in zip(masked_params, state):
                    p.copy_(saved)

        # ---- retain repair (when the run ends: target reached or step budget used) ---------------
        # The push can flip a few retained MCQ items whose distractor is a forget answer (demo KB,
        # anxiety: "which investigation best supports ..." items now predicting an anxiety scale).
        # The hold loss only sees them in a random batch now and then and only holds the correct
        # token. Here, on the same masked weights: find the retained items (seeded sample of
        # ``at_risk_pool``) that the original model answered correctly and the unlearned one does
        # not, and descend their option cross-entropy (raise the correct option, lower the
        # distractor that beats it) plus the usual hold batch, with the component along the
        # gradients of the forget and calibration mean answer losses removed. After every step the
        # harness stop rule is re-checked (see forget_side_ok); the last state that passes is kept,
        # so the repair never undoes forgetting. At most ``repair_steps`` steps of norm
        # ``repair_step_norm``.
        def repair_retain(step: int) -> dict:
            rows = sorted(ctx.rng.sample(range(len(ctx.retain)), min(s["at_risk_pool"], len(ctx.retain))))
            retained = [ctx.retain[i] for i in rows]
            before = option_margins(ctx.ref_model, ctx.tok, retained, ctx.max_len)
            now = option_margins(model, ctx.tok, retained, ctx.max_len)
            # Only items answered by the original model and now wrong or within
            # ``repair_watch_margin`` nats of flipping are re-scored after each (small) step.
            watch = [it for it, b, m in zip(retained, before, now) if b > 0 and m < s["repair_watch_margin"]]
            damaged = [it for it, b, m in zip(retained, before, now) if b > 0 and m <= 0]

            def damaged_now() -> list:
                return [it for it, m in zip(watch, option_margins(model, ctx.tok, watch, ctx.max_len)) if m <= 0]

            info = {
                "repair_damaged_before": len(damaged),
                "repair_damaged_after": len(damaged),
                "repair_steps": 0,
                "repair_reverted": False,
            }
            if not damaged:
                return info
            # A repair state is kept only if the forget side is no worse than the stop rule asks or
            # than it was when the repair began (a run that ended on its step budget short of the
            # target still gets its retained items back, without moving further from the target).
            if stop.reason != "reached_target":
                stop.check(step)
            auc0, facc0 = stop.last_auc, stop.last_forget_acc

            def forget_side_ok() -> bool:  # (reaching the target implies both conditions)
                stop.check(step + r)
                auc_ok = stop.last_auc <= max(s["stop_auc"], auc0)
                mcq_ok = facc0 is None or stop.last_forget_acc <= max(stop.last_calib_acc, facc0)
                return auc_ok and mcq_ok

            good = snapshot()

            # Guard losses on at most 256 forget / calibration items (a seeded sample when more), so
            # a repair step costs the same on 20 or 2,000 forget items.
            def capped(items: list, n: int) -> list:
                return items if len(items) <= n else ctx.rng.sample(items, n)

            f_ids, f_att, f_labels = collate(capped(ctx.forget_enc, 256), ctx.tok.pad_token_id, ctx.device)
            c_ids, c_att, c_labels = collate(capped(ctx.calib_enc, 256), ctx.tok.pad_token_id, ctx.device)
            model.train()
            r = 0
            while r < s["repair_steps"]:
                if ctx.should_cancel():
                    raise Cancelled()
                fix = option_cross_entropy(model, ctx.tok, capped(damaged, 64), ctx.max_len).mean()
                rb = ctx.retain_batch(s["retain_batch"])
                if rb:
                    r_ids, r_att, r_labels = collate(rb, ctx.tok.pad_token_id, ctx.device)
                    fix = fix + answer_nll(model, r_ids, r_att, r_labels).mean()
                g = flat(torch.autograd.grad(fix, masked_params, allow_unused=True))
                # Hold the mean answer loss of the forget items and of the calibration non-members
                # fixed to first order: the forget items must not come back, and the non-members
                # must not get easier either (both would move the membership AUC).
                guards = [
                    flat(torch.autograd.grad(answer_nll(model, i, a, lab).mean(), masked_params, allow_unused=True))
                    for i, a, lab in ((f_ids, f_att, f_labels), (c_ids, c_att, c_labels))
                ]
                if not apply(project_out(g, guards), s["repair_step_norm"]):
                    break
                r += 1
                model.eval()
                if not forget_side_ok():
                    break
                good = snapshot()
                info["repair_steps"] = r
                damaged = damaged_now()
                info["repair_damaged_after"] = len(damaged)
                model.train()
                if not damaged:
                    break
            if info["repair_steps"] != r:  # the last step broke the forget target: back to the last good state
                restore(good)
                info["repair_reverted"] = True
                model.eval()
                stop.check(step + info["repair_steps"])
            return info

        # ---- settle (after the repair): over-forgetting is a membership signal too --------------
        # The push stops at the first check with calibration AUC <= stop_auc; the last bounded
        # steps before it and the repair (which lowers forget answers that are distractors of
        # retained questions) can leave the forget items well past the non-members (seed-0 anxiety:
        # calibration AUC 0.463 after the repair), which an attacker reads as "these were removed".
        # When the calibration AUC is more than ``settle_margin`` below stop_auc, the forget items
        # whose loss is above the non-member median are pulled back (descend their mean answer NLL,
        # without its component against the retain gradient), ``settle_step_norm`` per step, until
        # the calibration AUC is back at stop_auc. A step after which the forget items are answered
        # better than the non-members (the MCQ half of the stop rule) is undone, and settling ends.
        def settle_forget(step: int) -> dict:
            info = {"settle_steps": 0, "settle_reverted": False}
            stop.check(step)
            if stop.last_auc is None or stop.last_auc >= s["stop_auc"] - s["settle_margin"]:
                return info
            good = snapshot()
            for r in range(1, s["settle_steps"] + 1):
                if ctx.should_cancel():
                    raise Cancelled()
                level = float(torch.tensor(stop.last_calib_losses).median())
                over = [e for e, loss in zip(ctx.forget_enc, stop.last_forget_losses) if loss > level]
                if not over:
                    break
                model.train()
                f_ids, f_att, f_labels = collate(over[:256], ctx.tok.pad_token_id, ctx.device)
                g = flat(
                    torch.autograd.grad(
                        answer_nll(model, f_ids, f_att, f_labels).mean(), masked_params, allow_unused=True
                    )
                )
                rb = ctx.retain_batch(s["retain_batch"])
                if rb:
                    r_ids, r_att, r_labels = collate(rb, ctx.tok.pad_token_id, ctx.device)
                    g = project_conflicting(
                        g,
                        flat(
                            torch.autograd.grad(
                                answer_nll(model, r_ids, r_att, r_labels).mean(), masked_params, allow_unused=True
                            )
                        ),
                    )
                model.eval()
                if not apply(g, s["settle_step_norm"]):
                    break
                stop.check(step + r)
                if stop.last_forget_acc is not None and stop.last_forget_acc > stop.last_calib_acc:
                    restore(good)
                    info["settle_reverted"] = True
                    stop.check(step + r)
                    break
                good = snapshot()
                info["settle_steps"] = r
                if stop.last_auc >= s["stop_auc"]:
                    break
            return info

        # ---- constrained updates ---------------------------------------------------------------
        stop = StopRule(ctx, s["check_every"], s["max_steps"], s["time_budget_s"], s["stop_auc"], s["stop_mcq"])
        step, conflicts = 0, 0
        step_norm, last_side = s["step_norm"], None  # current step norm (damped), AUC side at the last check
        repair = {"repair_steps": 0}
        model.train()
        try:
            while not stop.done(step):
                if step % s["check_every"] == 0:
                    refresh_focus()
                    refresh_at_risk()
                    # Damped step: each time the calibration AUC crosses stop_auc between checks
                    # the run has overshot; halve the step (Rprop-style) so it settles instead of
                    # swinging (seen: forget loss 8 <-> 14 nats every 15 steps for 300 steps).
                    if stop.last_auc is not None:
                        side = stop.last_auc > s["stop_auc"]
                        if last_side is not None and side != last_side:
                            step_norm = max(step_norm * s["step_decay"], s["step_norm"] * s["min_step_share"])
                        last_side = side
                g_f, g_r = step_grads()
                if s["projection"]:
                    if torch.dot(g_f, g_r) < 0:
                        conflicts += 1
                    g = project_conflicting(g_f, g_r) + s["retain_weight"] * g_r
                else:
                    g = g_f + s["retain_weight"] * g_r
                if not apply(g, step_norm):
                    stop.reason = "zero_gradient"
                    break
                step += 1
            if (
                s["repair_steps"] > 0
                and stop.reason in ("reached_target", "max_steps")
                and ctx.retain
                and ctx.calib_enc
            ):
                repair = repair_retain(step)
            if s["settle_steps"] > 0 and stop.reason in ("reached_target", "max_steps") and ctx.calib_enc:
                repair = {**repair, **settle_forget(step + repair["repair_steps"])}
        finally:
            for _, p in params:
                p.requires_grad_(True)
        model.zero_grad(set_to_none=True)
        model.eval()
        return {
            "steps": step,
            "stopped": stop.reason,
            "forget_loss": stop.last_forget_loss,
            "target_loss": ctx.target_loss,
            "calibration_auc": stop.last_auc,
            "stop_forget_mcq_acc": stop.last_forget_acc,
            "stop_calib_mcq_acc": stop.last_calib_acc,
            "mask_size": k,
            "mask_fraction": k / total,
            "mask_by_param": mask_by_param,
            "conflicting_steps": conflicts,
            "at_risk_held_max": at_risk_seen[0],
            **repair,
            "token_roles": role_counts,
            "method_seconds": round(time.time() - t0, 2),
        }
