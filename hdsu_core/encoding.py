"""QA text format and its token encoding (shared by training, probes and unlearning)::

    <bos>Question: {question}\nAnswer: {answer}<eos>

Loss and scores use the answer tokens (+ eos) only; the prompt is context.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Sequence

import torch

from hdsu_core.datasets import QAItem

PROMPT = "Question: {question}\nAnswer:"


@dataclass
class Encoded:
    ids: list[int]
    answer_start: int  # index of the first answer token in ids
    offsets: list[tuple[int, int]]  # char offsets into text() for each id ((0,0) for specials)
    text: str  # prompt + answer text the offsets refer to


# Encodings per tokenizer: the stop rule re-scores the same forget / non-member questions and all
# their options at every check (tens of thousands of tokenizer calls in a 300-step run, ~8 % of
# its time). Weakly keyed, so a dropped tokenizer takes its cache with it; bounded per tokenizer.
_ENCODE_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_ENCODE_CACHE_MAX = 200_000


def encode_qa(tok, question: str, answer: str, max_len: int = 256) -> Encoded:
    """Token ids of ``<bos>Question: ...\nAnswer: <answer><eos>``, with where the answer starts and
    each token's character offsets. Cached per tokenizer; callers must not mutate the result."""
    try:
        cache = _ENCODE_CACHE.setdefault(tok, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: no cache
        cache = None
    key = (question, answer, max_len)
    if cache is not None and key in cache:
        return cache[key]
    enc = _encode_qa(tok, question, answer, max_len)
    if cache is not None:
        if len(cache) >= _ENCODE_CACHE_MAX:
            cache.clear()
        cache[key] = enc
    return enc


def _encode_qa(tok, question: str, answer: str, max_len: int) -> Encoded:
    return encode_prompted(tok, PROMPT.format(question=question.strip()), answer, max_len)


def encode_prompted(tok, prompt: str, answer: str, max_len: int = 256) -> Encoded:
    """``encode_qa`` with a prompt of the caller's (another template, a few-shot prefix): token ids
    of ``<bos>{prompt} <answer><eos>``, the prompt truncated from the left. Not cached."""
    ans = " " + answer.strip()
    p = tok(prompt, add_special_tokens=False, return_offsets_mapping=True)
    a = tok(ans, add_special_tokens=False, return_offsets_mapping=True)
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    p_ids, p_off = list(p["input_ids"]), [tuple(o) for o in p["offset_mapping"]]
    a_ids = list(a["input_ids"]) + eos
    a_off = [(s + len(prompt), e + len(prompt)) for s, e in a["offset_mapping"]] + [(0, 0)] * len(eos)
    # Keep the answer whole; truncate the question from the left when too long.
    room = max(8, max_len - len(bos) - len(a_ids))
    if len(p_ids) > room:
        p_ids, p_off = p_ids[-room:], p_off[-room:]
    ids = bos + p_ids + a_ids
    return Encoded(ids, len(bos) + len(p_ids), [(0, 0)] * len(bos) + p_off + a_off, prompt + ans)


def collate(encs: Sequence[Encoded], pad_id: int, device="cpu"):
    """Right-padded batch; labels = next-token targets with -100 outside the answer."""
    n = max(len(e.ids) for e in encs)
    ids = torch.full((len(encs), n), pad_id, dtype=torch.long)
    att = torch.zeros((len(encs), n), dtype=torch.long)
    labels = torch.full((len(encs), n), -100, dtype=torch.long)
    for i, e in enumerate(encs):
        L = len(e.ids)
        ids[i, :L] = torch.tensor(e.ids)
        att[i, :L] = 1
        labels[i, e.answer_start : L] = ids[i, e.answer_start : L]
    return ids.to(device), att.to(device), labels.to(device)


def qa_texts(items: Sequence[QAItem]) -> list[str]:
    out = []
    for it in items:
        out.append(PROMPT.format(question=it.question.strip()) + " " + it.answer_text.strip())
        out.extend(it.options)
    return out
