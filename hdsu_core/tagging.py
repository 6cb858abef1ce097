"""Tag QA items with concepts and build forget / retain / holdout splits.

Tagging rule (most specific concept wins):
1. ``labels["concept_id"]`` (demo and generic data that name their concept) is used directly.
2. Dataset matchers (e.g. MedMCQA ``subject_name == "Surgery"``) give the anchor concept; the
   deepest matching concept wins.
3. Case-insensitive whole-word/phrase term matches in the question and the correct answer refine
   the anchor to the deepest concept *inside the anchor's subtree* (a Surgery question that says
   "appendix" becomes ``appendicitis``; a Surgery question that says "anxiety" stays Surgery).
   Without an anchor the deepest term match anywhere wins. Ties: more hits, longer term, then id.

Membership (trained-on vs holdout) is decided per item by a seeded hash of its id, independently
of the forget selection, so one knowledge-injected model serves every selection: holdout items were
never trained on and are the non-members for membership-inference tests.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from hdsu_core.datasets import QAItem
from hdsu_core.hierarchy import Hierarchy, HierarchyError, Violation, subtree_totals


@dataclass(frozen=True)
class Tag:
    concept_id: str | None  # primary (most specific) concept, None when untagged
    via: str  # "label" | "matcher" | "term" | "none"
    matched: tuple[str, ...] = ()  # every concept whose matcher or term hit


def term_owners(hierarchy: Hierarchy) -> dict[str, list[str]]:
    """Each term (stripped, lower case) -> the concepts that list it, depth-first: a term with
    several owners is a term they share."""
    by_term: dict[str, list[str]] = defaultdict(list)
    for c in hierarchy.concepts():
        for t in {t.strip().lower() for t in c.terms if t.strip()}:
            by_term[t].append(c.id)
    return by_term


class TermIndex:
    """One compiled regex over all terms of a hierarchy, longest terms first so phrases beat words."""

    def __init__(self, hierarchy: Hierarchy):
        self.h = hierarchy
        self.by_term: dict[str, list[str]] = term_owners(hierarchy)
        terms = sorted(self.by_term, key=lambda t: (-len(t), t))
        self.regex = (
            re.compile(r"(?<!\w)(?:" + "|".join(re.escape(t) for t in terms) + r")(?!\w)", re.IGNORECASE)
            if terms
            else None
        )

    def spans(self, text: str) -> list[tuple[int, int, str, tuple[str, ...]]]:
        """(start, end, term, concept ids) for each non-overlapping term occurrence."""
        if not self.regex or not text:
            return []
        return [
            (m.start(), m.end(), m.group(0).lower(), tuple(self.by_term[m.group(0).lower()]))
            for m in self.regex.finditer(text)
        ]


class Tagger:
    def __init__(self, hierarchy: Hierarchy):
        self.h = hierarchy
        self.terms = TermIndex(hierarchy)
        self._below: dict[str, set[str]] = {}
        # (source, field) -> {value.lower(): [concept ids]}
        self.matchers: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for c in hierarchy.concepts():
            for m in c.matchers:
                self.matchers[(m["source"], m["field"])][str(m["equals"]).strip().lower()].append(c.id)

    def _matcher_hits(self, item: QAItem) -> list[str]:
        hits = []
        for (source, fld), values in self.matchers.items():
            if source not in (item.source, "*"):
                continue
            v = item.labels.get(fld)
            if v is None:
                continue
            hits.extend(values.get(str(v).strip().lower(), []))
        return hits

    def _best(self, candidates: Iterable[str], hits: Counter, term_len: dict[str, int]) -> str:
        return min(candidates, key=lambda c: (-self.h.concept(c).level, -hits[c], -term_len.get(c, 0), c))

    def tag(self, item: QAItem) -> Tag:
        cid = item.labels.get("concept_id")
        if cid:
            if cid in self.h:
                return Tag(cid, "label", (cid,))
            # An unknown label falls through to matching rather than failing the whole dataset.
        anchors = self._matcher_hits(item)
        text = f"{item.question}\n{item.answer_text}"
        hits: Counter = Counter()
        term_len: dict[str, int] = {}
        for _, _, term, cids in self.terms.spans(text):
            for c in cids:
                hits[c] += 1
                term_len[c] = max(term_len.get(c, 0), len(term))
        matched = tuple(sorted(set(anchors) | set(hits)))
        if anchors:
            anchor = self._best(anchors, Counter(), {})
            below = self._below.get(anchor)
            if below is None:
                below = self._below[anchor] = self.h.descendants(anchor)
            inside = [c for c in hits if c in below]
            if inside:
                return Tag(self._best(inside, hits, term_len), "matcher", matched)
            return Tag(anchor, "matcher", matched)
        if hits:
            return Tag(self._best(hits, hits, term_len), "term", matched)
        return Tag(None, "none", matched)

    def tag_all(self, items: Sequence[QAItem]) -> dict[str, Tag]:
        return {it.id: self.tag(it) for it in items}


def is_member(item_id: str, seed: int, holdout_fraction: float) -> bool:
    """Stable membership draw: True = trained on, False = holdout (never trained on)."""
    h = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 >= holdout_fraction


def member_items(items: Sequence[QAItem], seed: int, holdout_fraction: float) -> list[QAItem]:
    """The items a model is trained on (the members); the rest are its never-seen holdout."""
    return [it for it in items if is_member(it.id, seed, holdout_fraction)]


@dataclass
class Split:
    forget: list[QAItem]
    retain: list[QAItem]
    holdout_forget: list[QAItem]  # under the selection, never trained on
    holdout_retain: list[QAItem]  # outside the selection, never trained on
    tags: dict[str, Tag]
    selected: list[str]
    targeted: set[str]  # every concept under the selection
    seed: int
    holdout_fraction: float
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # concept -> {forget, retain, holdout}

    @property
    def members(self) -> list[QAItem]:
        return self.forget + self.retain

    @property
    def holdout(self) -> list[QAItem]:
        return self.holdout_forget + self.holdout_retain

    def split_of(self) -> dict[str, str]:
        out = {it.id: "forget" for it in self.forget}
        out.update({it.id: "retain" for it in self.retain})
        out.update({it.id: "holdout" for it in self.holdout_forget})
        out.update({it.id: "holdout_retain" for it in self.holdout_retain})
        return out

    def summary(self) -> dict:
        return {
            "forget": len(self.forget),
            "retain": len(self.retain),
            "holdout_forget": len(self.holdout_forget),
            "holdout_retain": len(self.holdout_retain),
            "holdout": len(self.holdout),
            "selected": self.selected,
            "untagged": sum(1 for t in self.tags.values() if t.concept_id is None),
        }


def make_split(
    items: Sequence[QAItem],
    hierarchy: Hierarchy,
    forget: Iterable[str],
    *,
    seed: int = 0,
    holdout_fraction: float = 0.2,
    tags: dict[str, Tag] | None = None,
) -> Split:
    selected = [s.strip() for s in forget if s and s.strip()]
    if not selected:
        raise HierarchyError([Violation("empty_selection", (), "no concepts selected to forget")])
    unknown = [s for s in selected if s not in hierarchy]
    if unknown:
        raise HierarchyError(
            [Violation("unknown_concept", tuple(unknown), f"unknown concept id(s): {', '.join(unknown)}")]
        )
    targeted = hierarchy.expand_selection(selected)
    tags = tags if tags is not None else Tagger(hierarchy).tag_all(items)
    sp = Split([], [], [], [], tags, selected, targeted, seed, holdout_fraction)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"forget": 0, "retain": 0, "holdout": 0})
    for it in items:
        t = tags[it.id]
        under = t.concept_id is not None and t.concept_id in targeted
        member = is_member(it.id, seed, holdout_fraction)
        key = t.concept_id or "(untagged)"
        if member and under:
            sp.forget.append(it)
            counts[key]["forget"] += 1
        elif member:
            sp.retain.append(it)
            counts[key]["retain"] += 1
        elif under:
            sp.holdout_forget.append(it)
            counts[key]["holdout"] += 1
        else:
            sp.holdout_retain.append(it)
            counts[key]["holdout"] += 1
    sp.counts = dict(counts)
    return sp


COUNT_KEYS = ("forget", "retain", "holdout")  # the per-concept counts of a Split


def rollup_counts(hierarchy: Hierarchy, counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Per-concept forget / retain / holdout counts including everything below each concept (for
    the tree views)."""
    return subtree_totals(hierarchy, counts, COUNT_KEYS)


def collateral_terms(hierarchy: Hierarchy, selected: Iterable[str]) -> list[dict]:
    """Terms of the selected branches that also appear on preserved concepts: forgetting them risks
    collateral damage (the warning shown before a launch)."""
    targeted = hierarchy.expand_selection(selected)
    out = []
    for term, cids in sorted(term_owners(hierarchy).items()):  # no regex needed: only who owns which term
        inside = [c for c in cids if c in targeted]
        outside = [c for c in cids if c not in targeted]
        if inside and outside:
            out.append({"term": term, "targeted": inside, "preserved": outside})
    return out
