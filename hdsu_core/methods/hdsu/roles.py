"""Concept-aware token-level intervention: every token of a forget item gets a role from the
hierarchy, and each role a push and a hold weight.

Roles: ``answer`` (forget answer), ``answer_shared`` (a forget-answer token that is a preserved
term or also occurs in retained answers), ``target`` (a term of a targeted concept), ``preserve``
(a term of a preservation-critical concept: L1-L2 ancestors and every unselected concept),
``template`` (everything else). Push weights: answer 1, answer_shared ``shared_answer_weight``,
target ``concept_weight``, preserve and template 0. Hold: preserve tokens are anchored to the
original model with KL.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hdsu_core.encoding import Encoded, collate
from hdsu_core.tagging import TermIndex

# Push weight of the roles whose weight is fixed; target and answer_shared take theirs from the settings.
ROLE_PUSH = {"answer": 1.0, "preserve": 0.0, "template": 0.0}
ROLES = ("answer", "answer_shared", "target", "preserve", "template")


def token_roles(
    enc: Encoded, term_index: TermIndex, targeted: set[str], retain_answer_tokens: set[int] | None = None
) -> list[str]:
    """Role of each token of an encoded QA item. A term shared by a targeted and a preserved
    concept counts as preserved: when in doubt, do not push. Inside the forget answer, a preserved
    term or a token that also occurs in retained answers is ``answer_shared``: the fact is still
    pushed, but softly, because the token carries preserved knowledge too."""
    spans = []
    for s, e, _term, cids in term_index.spans(enc.text):
        spans.append((s, e, "preserve" if any(c not in targeted for c in cids) else "target"))
    roles = []
    for t, (s, e) in enumerate(enc.offsets):
        role = _span_role(spans, s, e)
        if t >= enc.answer_start and role != "target":
            shared = role == "preserve" or (retain_answer_tokens is not None and enc.ids[t] in retain_answer_tokens)
            role = "answer_shared" if shared else "answer"
        elif role is None:
            role = "template"
        roles.append(role)
    return roles


def _span_role(spans: list[tuple[int, int, str]], s: int, e: int) -> str | None:
    """The role of the first term span overlapping the token's characters [s, e)."""
    if e > s:
        for ss, se, r in spans:
            if s < se and ss < e:
                return r
    return None


def role_weights(
    roles: list[str], concept_weight: float, shared_answer_weight: float = 0.3
) -> tuple[list[float], list[float]]:
    """Push and hold weight per token: answer 1, answer_shared ``shared_answer_weight``, target
    ``concept_weight``, preserve and template 0; hold 1 on preserve tokens only."""
    weights = {**ROLE_PUSH, "target": concept_weight, "answer_shared": shared_answer_weight}
    push = [weights[r] for r in roles]
    hold = [1.0 if r == "preserve" else 0.0 for r in roles]
    return push, hold


@dataclass
class ForgetBatch:
    """The whole forget set as one right-padded batch with per-token push and hold weights."""

    ids: torch.Tensor
    att: torch.Tensor
    push_w: torch.Tensor  # (B, T), weight of each token in the push loss
    hold_w: torch.Tensor  # (B, T), weight of each token in the KL hold
    role_counts: dict[str, int]


def forget_batch(ctx, s: dict) -> ForgetBatch:
    """Token roles of every forget item (from the hierarchy when ``token_level``, else answer vs
    template) and the padded batch with their weights."""
    index = TermIndex(ctx.hierarchy) if ctx.hierarchy is not None else None
    # Answer tokens that also occur in retained answers carry preserved knowledge: not pushed
    # (or only with shared_answer_weight); the distinctive tokens of a forget answer suffice.
    retain_answer_tokens = {i for e in ctx.retain_enc for i in e.ids[e.answer_start :]} if s["token_level"] else set()
    push_rows, hold_rows = [], []
    role_counts = dict.fromkeys(ROLES, 0)
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
    ids, att, _ = collate(ctx.forget_enc, ctx.tok.pad_token_id, ctx.device)
    width = ids.shape[1]
    return ForgetBatch(ids, att, _pad(push_rows, width, ctx.device), _pad(hold_rows, width, ctx.device), role_counts)


def _pad(rows: list[list[float]], n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    out = torch.zeros((len(rows), n), device=device)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, device=device)
    return out
