"""Format-shift probes: is the forgetting tied to the exact format the method saw? Forget accuracy
(and, as the yardstick, never-seen accuracy on the selected concepts) when the question is asked
another way. No LLM: every variant is a fixed, seeded, rule-based transformation.

* ``shuffled``: the options in a seeded random order (the answer index follows its option);
* ``wording``: another template, ``Q: ...\\nA:`` instead of ``Question: ...\\nAnswer:``;
* ``letters``: the options listed in the prompt as A. / B. / ...; the model picks a letter;
* ``fewshot``: two answered retained questions before the question;
* ``rewrite``: the question itself rewritten by rules (synonyms, another interrogative; a framing
  sentence when no rule applies).
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Callable, Sequence

from hdsu_core.attack_targets import FORMATS
from hdsu_core.attacks.base import AttackContext, accuracy_of, register
from hdsu_core.datasets import QAItem
from hdsu_core.encoding import PROMPT
from hdsu_core.probes import score_mcq

LETTERS = "ABCDEFGHIJ"
SHUFFLE_SALT = 15_485_863
N_SHOTS = 2

# (pattern, replacement), case-insensitive: the first interrogative rule that matches, then every synonym.
INTERROGATIVE_RULES: tuple[tuple[str, str], ...] = (
    (r"^what is the\b", "Which is the"),
    (r"^which is\b", "What is"),
    (r"^which\b", "What"),
    (r"^what\b", "Which"),
)
SYNONYM_RULES: tuple[tuple[str, str], ...] = (
    (r"\bfirst-line\b", "initial"),
    (r"\btreatment\b", "therapy"),
    (r"\bhallmark\b", "characteristic"),
    (r"\bfeature\b", "sign"),
    (r"\binvestigation\b", "test"),
    (r"\bmajor\b", "important"),
    (r"\bmost common\b", "commonest"),
    (r"\bpatient\b", "individual"),
    (r"\bcaused by\b", "due to"),
)
FRAMING = "Answer the following question. {question}"


def shuffle_options(item: QAItem, seed: int) -> QAItem:
    """The item with its options in a seeded order of its own; ``answer`` points at the same text."""
    order = list(range(len(item.options)))
    random.Random(f"{seed + SHUFFLE_SALT}:{item.id}").shuffle(order)
    return dataclasses.replace(item, options=tuple(item.options[j] for j in order), answer=order.index(item.answer))


def rewrite_question(question: str) -> str:
    """The question rewritten by the interrogative and synonym rules; framed by ``FRAMING`` when no rule changes it."""
    out = question.strip()
    for pattern, repl in INTERROGATIVE_RULES:
        if re.search(pattern, out, flags=re.IGNORECASE):
            out = re.sub(pattern, repl, out, count=1, flags=re.IGNORECASE)
            break
    for pattern, repl in SYNONYM_RULES:
        out = re.sub(pattern, repl, out, flags=re.IGNORECASE)
    return out if out != question.strip() else FRAMING.format(question=out)


def _letters_item(item: QAItem) -> QAItem:
    return dataclasses.replace(item, options=tuple(LETTERS[: len(item.options)]))


def _letters_prompt(originals: dict[str, QAItem]) -> Callable[[QAItem], str]:
    def prompt(it: QAItem) -> str:
        opts = "\n".join(f"{LETTERS[j]}. {o}" for j, o in enumerate(originals[it.id].options))
        return f"Question: {it.question.strip()}\nOptions:\n{opts}\nAnswer:"

    return prompt


def _fewshot_prompt(shots: Sequence[QAItem]) -> Callable[[QAItem], str]:
    prefix = "".join(PROMPT.format(question=s.question.strip()) + f" {s.answer_text.strip()}\n\n" for s in shots)
    return lambda it: prefix + PROMPT.format(question=it.question.strip())


def variant(
    fmt: str, items: Sequence[QAItem], seed: int, shots: Sequence[QAItem]
) -> tuple[list[QAItem], Callable[[QAItem], str] | None]:
    """The items of format ``fmt`` and the prompt function score_mcq asks them with (None: the default)."""
    if fmt == "shuffled":
        return [shuffle_options(it, seed) for it in items], None
    if fmt == "wording":
        return list(items), lambda it: f"Q: {it.question.strip()}\nA:"
    if fmt == "letters":
        return [_letters_item(it) for it in items], _letters_prompt({it.id: it for it in items})
    if fmt == "fewshot":
        return list(items), _fewshot_prompt(shots)
    if fmt == "rewrite":
        return [dataclasses.replace(it, question=rewrite_question(it.question)) for it in items], None
    raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


@register
class FormatShift:
    name = "format"
    title = "Format shift"

    def run(self, ctx: AttackContext) -> dict[str, float]:
        shots = random.Random(ctx.seed + SHUFFLE_SALT).sample(ctx.split.retain, min(N_SHOTS, len(ctx.split.retain)))
        never_seen = ctx.split.holdout_forget
        max_len = 3 * ctx.max_len  # the listed options and the shots make longer prompts
        out: dict[str, float] = {}
        for fmt in FORMATS:
            ctx.progress("attack", 0.95, f"format shift: {fmt}")
            for who, model, tok in (("", ctx.model, ctx.tok), ("_original", ctx.original, ctx.original_tok)):
                items, prompt = variant(fmt, ctx.split.forget, ctx.seed, shots)
                out[f"attack_format_{fmt}_forget_acc{who}"] = accuracy_of(
                    score_mcq(model, tok, items, max_len=max_len, prompt=prompt)
                )
            if never_seen:
                items, prompt = variant(fmt, never_seen, ctx.seed, shots)
                out[f"attack_format_{fmt}_never_seen_acc"] = accuracy_of(
                    score_mcq(ctx.model, ctx.tok, items, max_len=max_len, prompt=prompt)
                )
        out["attack_format_max_forget_acc"] = max(out[f"attack_format_{f}_forget_acc"] for f in FORMATS)
        return out
