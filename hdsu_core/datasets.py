"""QA items and dataset loaders (MedMCQA, MHQA gold / MHQA-B, generic CSV/JSONL, demo)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class QAItem:
    id: str                      # unique within a dataset, stable
    question: str
    options: tuple[str, ...]     # >= 2 options
    answer: int                  # 0-based index into options
    source: str                  # "medmcqa" | "mhqa" | "mhqa_b" | "generic" | "demo"
    labels: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def answer_text(self) -> str:
        return self.options[self.answer]
