"""What every attack shares: the context it reads, the registry, and the recovery formula.

An attack is a class with ``name``, ``title`` and ``run(ctx) -> dict[str, float]``; the metrics it
returns are named ``attack_<name>_...`` (or ``mia_auc_...`` for the membership attacks, next to the
run's own ``mia_auc``). It never modifies ``ctx.model`` nor ``ctx.original``: whatever it trains or
quantizes is a copy (the run writes its delta and receipt from the model it hands back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from hdsu_core import metrics as M
from hdsu_core.models import clone_model
from hdsu_core.progress import ProgressFn, no_progress
from hdsu_core.tagging import Split

ATTACKS: dict[str, type] = {}


def register(cls):
    ATTACKS[cls.name] = cls
    return cls


def get_attack(name: str):
    try:
        return ATTACKS[name]()
    except KeyError:
        raise ValueError(f"unknown attack {name!r}; available: {', '.join(sorted(ATTACKS))}") from None


@dataclass
class AttackContext:
    """The model under attack next to the model it was made from, probed on the run's split."""

    model: torch.nn.Module  # the unlearned model (or the retrain reference): read only
    tok: Any
    original: torch.nn.Module  # the model before unlearning: read only
    original_tok: Any  # the retrain reference has a tokenizer of its own
    split: Split
    before: dict[str, list[dict]]  # score_mcq rows of the original per part (forget / retain / holdout)
    after: dict[str, list[dict]]  # the same for the model under attack
    eval_ids: set[str]  # the non-members the membership attacks are evaluated on
    max_len: int = 96
    seed: int = 0
    pretrained: bool = False  # a given (pre-trained) model: the gentle relearning recipe
    reference: tuple[torch.nn.Module, Any] | None = None  # (retrain model, its tokenizer): the MIA reference
    progress: ProgressFn = field(default=no_progress)

    @property
    def same_architecture(self) -> bool:
        """Whether the two models' weights correspond one to one (not so for a retrain reference
        with its own tokenizer: the weight-change analyses need it)."""
        a, b = self.model.state_dict(), self.original.state_dict()
        return a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)


def float_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A float32 copy to attack (a bfloat16 run's model would round a fine-tune's small steps away)."""
    return clone_model(model).float()


def recovery(acc_original: float, acc_unlearned: float, acc_attacked: float) -> float:
    """Share of the forgotten accuracy an attack brings back:
    ``(acc attacked - acc unlearned) / (acc original - acc unlearned)``; 1 = all of it back, 0 = none,
    negative = lower still. NaN when nothing was forgotten (no drop to recover)."""
    drop = acc_original - acc_unlearned
    if not drop > 1e-12:
        return float("nan")
    return (acc_attacked - acc_unlearned) / drop


def accuracy_of(rows: Sequence[dict], ids: set[str] | None = None) -> float:
    """MCQ accuracy of score_mcq rows (of the items in ``ids`` only, when given)."""
    return M.accuracy(r["correct"] for r in rows if ids is None or r["item_id"] in ids)
