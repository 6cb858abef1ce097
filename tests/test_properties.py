"""Property-based tests (hypothesis): hierarchy edits and splits keep their invariants for any input.

* Any sequence of hierarchy edits (add, rename, set terms, move, delete a subtree, delete and
  reattach), valid or not: after a valid edit the hierarchy is valid and round-trips through
  JSON; an invalid edit raises ``HierarchyError`` and changes nothing.
* Any JSON document or any bytes given as a hierarchy: a valid hierarchy or ``HierarchyError`` /
  violations, never another exception.
* Any selection, seed and holdout fraction: forget and retain are disjoint, the holdout is never
  trained on (it is exactly the non-members), every item is in exactly one split, and the
  forget side is exactly the items under the selection.

Examples are kept few (``max_examples``) so the file runs in seconds in CI; seeds are derived by
hypothesis from the test (``derandomize``), so a CI failure reproduces.
"""

from __future__ import annotations

import json
import random

from hierarchy_helpers import synthetic_hierarchy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hdsu_core import workspace as W
from hdsu_core.datasets import QAItem, load
from hdsu_core.hierarchy import Hierarchy, HierarchyError, load_default, validate_data
from hdsu_core.tagging import Tagger, is_member, make_split, member_items

PROFILE = settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

NAMES = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
IDS = st.one_of(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), st.text(max_size=6))
TERMS = st.lists(st.text(alphabet="abcAB ", max_size=5), max_size=4)
EDITS = ("add", "rename", "set_terms", "move", "delete_subtree", "delete_reattach")


def _start() -> Hierarchy:
    return synthetic_hierarchy(40, fanout=(2, 2, 3))


def _valid_and_round_trips(h: Hierarchy) -> None:
    doc = h.to_dict()
    assert validate_data(doc) == []
    again = Hierarchy.from_dict(json.loads(json.dumps(doc, ensure_ascii=False)))
    assert again.to_dict() == doc
    for c in h.concepts():
        assert (c.parent is None) == (c.level == 1)
        if c.parent is not None:
            assert h.concept(c.parent).level == c.level - 1


def _edit(h: Hierarchy, data, kind: str) -> None:
    """One edit of ``kind`` with drawn arguments: existing ids mostly, made-up ones sometimes."""
    ids = h.ordered_ids()

    def some_id():
        return data.draw(st.one_of(st.sampled_from(ids), IDS) if ids else IDS)

    if kind == "add":
        parent = data.draw(st.one_of(st.none(), st.sampled_from(ids) if ids else st.none(), IDS))
        level = data.draw(st.integers(0, 5))
        h.add(
            {
                "id": data.draw(IDS),
                "name": data.draw(NAMES),
                "level": level,
                "parent": parent,
                "terms": data.draw(TERMS),
            }
        )
    elif kind == "rename":
        h.rename(some_id(), data.draw(NAMES))
    elif kind == "set_terms":
        h.set_terms(some_id(), data.draw(TERMS))
    elif kind == "move":
        h.move(some_id(), data.draw(st.one_of(st.none(), st.sampled_from(ids) if ids else st.none())))
    else:
        h.delete(some_id(), "subtree" if kind == "delete_subtree" else "reattach")


@PROFILE
@given(data=st.data(), kinds=st.lists(st.sampled_from(EDITS), min_size=1, max_size=12))
def test_any_sequence_of_edits_keeps_the_hierarchy_valid_and_an_invalid_edit_changes_nothing(data, kinds):
    h = _start()
    applied = refused = 0
    for kind in kinds:
        before = json.dumps(h.to_dict())
        try:
            _edit(h, data, kind)
        except HierarchyError:
            refused += 1
            assert json.dumps(h.to_dict()) == before, f"refused {kind} changed the hierarchy"
            continue
        applied += 1
        _valid_and_round_trips(h)
    assert applied + refused == len(kinds)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
WRONG = (
    st.integers(1, 9)
    | st.booleans()
    | st.text(max_size=3)
    | st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)
)
CONCEPTISH = st.fixed_dictionaries(  # every field of a concept: of its type, or of a wrong one
    {"id": st.one_of(IDS, WRONG), "level": st.one_of(st.integers(-1, 5), WRONG)},
    optional={
        "name": st.one_of(NAMES, WRONG),
        "parent": st.one_of(IDS, st.none(), WRONG),
        "terms": st.one_of(TERMS, WRONG),
        "matchers": st.one_of(st.lists(JSON, max_size=2), WRONG),
        "codes": st.one_of(st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2), WRONG),
        "description": st.one_of(st.text(max_size=5), WRONG),
    },
)


@PROFILE
@given(doc=st.one_of(st.fixed_dictionaries({"concepts": st.lists(CONCEPTISH, min_size=1, max_size=6)}), JSON))
def test_any_json_document_is_a_valid_hierarchy_or_a_hierarchy_error(doc):
    try:
        h = Hierarchy.from_dict(doc)
    except HierarchyError as e:
        assert e.violations and all(v.kind for v in e.violations)
        return
    _valid_and_round_trips(h)
    Tagger(h).tag_all(ITEMS[:20])  # and usable: its terms and matchers compile


@PROFILE
@given(blob=st.binary(max_size=300))
def test_any_bytes_uploaded_as_a_hierarchy_give_a_hierarchy_or_violations(blob):
    h, violations = W.parse_hierarchy_json(blob)
    assert (h is None) == bool(violations)


ITEMS = load("demo").items
DEFAULT = load_default()
CONCEPTS = DEFAULT.ordered_ids()


@st.composite
def datasets(draw):
    """A sample of the demo items plus made-up ones (untagged, or labelled with a concept)."""
    rng = random.Random(draw(st.integers(0, 2**16)))
    items = rng.sample(ITEMS, draw(st.integers(0, 120)))
    for i in range(draw(st.integers(0, 20))):
        label = draw(st.one_of(st.none(), st.sampled_from(CONCEPTS), st.just("not_a_concept")))
        items.append(
            QAItem(
                f"extra-{i}", f"Question {i}?", ("a", "b"), 0, "generic", {} if label is None else {"concept_id": label}
            )
        )
    return items


@PROFILE
@given(
    items=datasets(),
    forget=st.lists(st.sampled_from(CONCEPTS), min_size=1, max_size=3),
    seed=st.integers(0, 10_000),
    holdout=st.floats(0.05, 0.9),
)
def test_split_invariants(items, forget, seed, holdout):
    sp = make_split(items, DEFAULT, forget, seed=seed, holdout_fraction=holdout)
    ids = lambda part: [it.id for it in part]  # noqa: E731
    parts = [ids(sp.forget), ids(sp.retain), ids(sp.holdout_forget), ids(sp.holdout_retain)]
    # Every item (tagged or not) is in exactly one split.
    assert sorted(sum(parts, [])) == sorted(it.id for it in items)
    assert len(set(sum(parts, []))) == len(items)
    # Forget and retain are disjoint; the holdout is never trained on: exactly the non-members.
    assert not set(parts[0]) & set(parts[1])
    trained = {it.id for it in member_items(items, seed, holdout)}
    assert trained == set(parts[0]) | set(parts[1])
    assert not trained & (set(parts[2]) | set(parts[3]))
    assert all(not is_member(i, seed, holdout) for i in parts[2] + parts[3])
    # The forget side is exactly what lies under the selection.
    under = DEFAULT.expand_selection(forget)
    for it in sp.forget + sp.holdout_forget:
        assert sp.tags[it.id].concept_id in under
    for it in sp.retain + sp.holdout_retain:
        assert sp.tags[it.id].concept_id not in under
    # The same inputs give the same split.
    again = make_split(items, DEFAULT, forget, seed=seed, holdout_fraction=holdout)
    assert [ids(p) for p in (again.forget, again.retain, again.holdout_forget, again.holdout_retain)] == parts
