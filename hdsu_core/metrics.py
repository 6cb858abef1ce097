"""Metrics as plain functions over per-item values (no model, no I/O)."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch


def accuracy(correct: Iterable[bool]) -> float:
    c = [bool(x) for x in correct]
    return float(np.mean(c)) if c else float("nan")


def auc(pos_scores: Sequence[float], neg_scores: Sequence[float]) -> float:
    """ROC AUC that a positive scores higher than a negative (ties count half); Mann-Whitney U."""
    p = np.asarray(pos_scores, dtype=float)
    n = np.asarray(neg_scores, dtype=float)
    if len(p) == 0 or len(n) == 0:
        return float("nan")
    allv = np.concatenate([p, n])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sv = allv[order]
    i = 0
    while i < len(sv):  # average ranks over ties
        j = i
        while j + 1 < len(sv) and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[:len(p)].sum() - len(p) * (len(p) + 1) / 2
    return float(u / (len(p) * len(n)))


def mia_auc_loss(member_losses: Sequence[float], nonmember_losses: Sequence[float]) -> float:
    """Loss attack: members are predicted by *low* loss, so the member score is -loss."""
    return auc([-x for x in member_losses], [-x for x in nonmember_losses])


def mia_auc_mink(member_mink: Sequence[float], nonmember_mink: Sequence[float]) -> float:
    return auc(member_mink, nonmember_mink)


def mia_resistance(auc_value: float) -> float:
    """1 at AUC 0.5 (attacker at chance), 0 at AUC 0 or 1."""
    return 1.0 - 2.0 * abs(auc_value - 0.5)


def forgetting_rate(forget_acc_after: float) -> float:
    """The paper's definition: FR = 1 - forget accuracy after unlearning."""
    return 1.0 - forget_acc_after


def changed_fraction(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """(changed, total) weights counted from the actual element-wise diff of two state dicts."""
    changed = total = 0
    for name, a in before.items():
        b = after[name]
        if not torch.is_floating_point(a):
            continue
        changed += int((a != b).sum())
        total += a.numel()
    return changed, total


def per_concept_accuracy(rows: Iterable[Mapping], key: str = "concept_id") -> dict[str, dict]:
    """{concept: {"n": n, "acc": acc}} from per-item rows with ``correct`` and a concept key."""
    acc: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        acc[r.get(key) or "(untagged)"].append(bool(r["correct"]))
    return {k: {"n": len(v), "acc": float(np.mean(v))} for k, v in acc.items()}
