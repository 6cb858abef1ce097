"""hdsu_core.hierarchy.subtree_totals: the one roll-up of per-concept values up the tree."""

from __future__ import annotations

from hdsu_core.hierarchy import Hierarchy, subtree_totals
from hdsu_core.tagging import rollup_counts


def small() -> Hierarchy:
    """root ─ a ─ a1, a2 ; root ─ b (and a second root, other)."""
    c = [
        {"id": "root", "name": "Root", "level": 1, "parent": None, "terms": ["root"]},
        {"id": "a", "name": "A", "level": 2, "parent": "root", "terms": ["aa"]},
        {"id": "a1", "name": "A1", "level": 3, "parent": "a", "terms": ["aone"]},
        {"id": "a2", "name": "A2", "level": 3, "parent": "a", "terms": ["atwo"]},
        {"id": "b", "name": "B", "level": 2, "parent": "root", "terms": ["bb"]},
        {"id": "other", "name": "Other", "level": 1, "parent": None, "terms": ["other"]},
    ]
    return Hierarchy.from_dict({"format": "hdsu-hierarchy/1", "name": "small", "concepts": c})


def test_children_are_summed_into_every_ancestor():
    h = small()
    direct = {"a1": {"n": 2, "c": 1}, "a2": {"n": 3, "c": 3}, "a": {"n": 1, "c": 0}, "b": {"n": 4, "c": 2}}
    t = subtree_totals(h, direct, ("n", "c"))
    assert t["a1"] == {"n": 2, "c": 1} and t["a2"] == {"n": 3, "c": 3}
    assert t["a"] == {"n": 6, "c": 4}  # itself + both children
    assert t["b"] == {"n": 4, "c": 2}
    assert t["root"] == {"n": 10, "c": 6}
    assert t["other"] == {"n": 0, "c": 0}  # every concept gets a row


def test_unknown_ids_and_missing_keys_are_ignored():
    h = small()
    t = subtree_totals(h, {"(untagged)": {"n": 5}, "a1": {}}, ("n",))
    assert set(t) == set(h.graph.nodes) and all(v == {"n": 0} for v in t.values())


def test_split_counts_roll_up_through_the_same_function():
    h = small()
    counts = {"a1": {"forget": 2, "retain": 0, "holdout": 1}, "b": {"forget": 0, "retain": 5, "holdout": 2}}
    rolled = rollup_counts(h, counts)
    assert rolled["root"] == {"forget": 2, "retain": 5, "holdout": 3}
    assert rolled == subtree_totals(h, counts, ("forget", "retain", "holdout"))
