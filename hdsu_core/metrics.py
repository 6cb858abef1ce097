"""Metrics as plain functions over per-item values (no model, no I/O)."""

from __future__ import annotations

from collections import defaultdict
from typing import Collection, Iterable, Mapping, Sequence

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
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[: len(p)].sum() - len(p) * (len(p) + 1) / 2
    return float(u / (len(p) * len(n)))


def mia_auc_loss(member_losses: Sequence[float], nonmember_losses: Sequence[float]) -> float:
    """Loss attack: members are predicted by *low* loss, so the member score is -loss."""
    return auc([-x for x in member_losses], [-x for x in nonmember_losses])


def auc_bootstrap_ci(
    pos_scores: Sequence[float], neg_scores: Sequence[float], *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``auc`` (both groups resampled with replacement, seeded).
    With 20 forget items against 50 non-members the AUC's own sampling error is about +-0.08:
    the interval says whether a measured AUC is distinguishable from 0.5 at all."""
    p = np.asarray(pos_scores, dtype=float)
    n = np.asarray(neg_scores, dtype=float)
    if len(p) == 0 or len(n) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    # Vectorised Mann-Whitney: P(pos > neg) + 0.5 P(pos == neg) per resample.
    pi = rng.integers(0, len(p), size=(n_boot, len(p)))
    ni = rng.integers(0, len(n), size=(n_boot, len(n)))
    chunk = max(1, int(2e7 // (len(p) * len(n))))  # bounded memory on large probe sets
    vals = np.empty(n_boot)
    for s in range(0, n_boot, chunk):
        ps, ns = p[pi[s : s + chunk]][:, :, None], n[ni[s : s + chunk]][:, None, :]
        vals[s : s + chunk] = (ps > ns).mean((1, 2)) + 0.5 * (ps == ns).mean((1, 2))
    a = (1.0 - level) / 2
    return float(np.quantile(vals, a)), float(np.quantile(vals, 1.0 - a))


def mia_auc_loss_ci(
    member_losses: Sequence[float], nonmember_losses: Sequence[float], seed: int = 0
) -> tuple[float, float]:
    return auc_bootstrap_ci([-x for x in member_losses], [-x for x in nonmember_losses], seed=seed)


def mia_auc_mink(member_mink: Sequence[float], nonmember_mink: Sequence[float]) -> float:
    return auc(member_mink, nonmember_mink)


def mia_resistance(auc_value: float) -> float:
    """1 at AUC 0.5 (attacker at chance), 0 at AUC 0 or 1."""
    return 1.0 - 2.0 * abs(auc_value - 0.5)


def forgetting_rate(forget_acc_after: float) -> float:
    """The paper's definition: FR = 1 - forget accuracy after unlearning."""
    return 1.0 - forget_acc_after


def changed_fraction(
    before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor], skip: Collection[str] = ()
) -> tuple[int, int]:
    """(changed, total) weights counted from the actual element-wise diff of two state dicts;
    ``skip``: second names of tied tensors (``weight_hashes.tied_aliases``), counted once."""
    changed = total = 0
    for name, a in before.items():
        if name in skip:
            continue
        b = after[name].to(a.device)  # the snapshot may live on the CPU, the model on a GPU
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
