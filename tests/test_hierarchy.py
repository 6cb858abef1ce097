"""Concept hierarchy: validation (every violation, with ids), edit operations, JSON io, diff."""

from __future__ import annotations

import copy
import json

import pytest

from hdsu_core.hierarchy import (
    FORMAT,
    Concept,
    Hierarchy,
    HierarchyError,
    Violation,
    diff_summary,
    load_default,
    validate_data,
)

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def c(cid, level, parent=None, name=None, terms=(), matchers=(), **extra) -> dict:
    d = {
        "id": cid,
        "name": cid.upper() if name is None else name,
        "level": level,
        "parent": parent,
        "terms": list(terms),
        "matchers": list(matchers),
        "codes": {},
        "description": "",
    }
    d.update(extra)
    return d


def doc(*concepts) -> dict:
    return {"format": FORMAT, "name": "test", "concepts": list(concepts)}


def small() -> dict:
    """a(1) > b(2) > c(3) > d(4), e(4); b > f(3); a > g(2) > h(3); r(1) > s(2)."""
    return doc(
        c("a", 1, terms=["alpha"]),
        c("b", 2, "a", terms=["beta"]),
        c("c", 3, "b", terms=["gamma", "shared"]),
        c("d", 4, "c", terms=["delta"]),
        c("e", 4, "c", terms=["epsilon"]),
        c("f", 3, "b", terms=["phi"]),
        c("g", 2, "a"),
        c(
            "h",
            3,
            "g",
            terms=["eta", "shared"],
            matchers=[{"source": "medmcqa", "field": "subject_name", "equals": "H"}],
        ),
        c("r", 1),
        c("s", 2, "r"),
    )


def pairs(violations) -> set[tuple[str, tuple[str, ...]]]:
    return {(v.kind, v.concept_ids) for v in violations}


def kinds(violations) -> set[str]:
    return {v.kind for v in violations}


@pytest.fixture()
def h() -> Hierarchy:
    return Hierarchy.from_dict(small())


@pytest.fixture(scope="module")
def default_h() -> Hierarchy:
    return load_default()


@pytest.fixture()
def dh(default_h) -> Hierarchy:
    return default_h.copy()


# --------------------------------------------------------------------------------------------
# validation: each kind on its own
# --------------------------------------------------------------------------------------------


def test_small_document_is_valid():
    assert validate_data(small()) == []
    hh = Hierarchy.from_dict(small())
    assert len(hh) == 10
    assert hh.roots() == ["a", "r"]
    assert hh.level_counts() == {1: 2, 2: 3, 3: 3, 4: 2}


def test_cycle_two_nodes():
    v = validate_data(doc(c("a", 1), c("x", 2, "y"), c("y", 3, "x")))
    assert ("cycle", ("x", "y")) in pairs(v)
    # a cycle cannot respect levels, so the skip is reported too, with both ids
    assert ("level_skip", ("x", "y")) in pairs(v)
    assert kinds(v) == {"cycle", "level_skip"}


def test_cycle_self_loop():
    v = validate_data(doc(c("a", 1, "a")))
    assert pairs(v) == {("cycle", ("a",))}


def test_cycle_three_nodes_reports_all_ids():
    v = validate_data(doc(c("p", 2, "r"), c("q", 3, "p"), c("r", 4, "q")))
    assert ("cycle", ("p", "q", "r")) in pairs(v)


def test_level_skip():
    v = validate_data(doc(c("a", 1), c("b", 2, "a"), c("d", 4, "b")))
    assert pairs(v) == {("level_skip", ("d", "b"))}
    assert "exactly one level below" in v[0].message


def test_level_skip_same_level_as_parent():
    v = validate_data(doc(c("a", 1), c("b", 1, "a")))
    assert pairs(v) == {("level_skip", ("b", "a"))}


def test_duplicate_id():
    v = validate_data(doc(c("a", 1), c("b", 2, "a"), c("b", 2, "a", name="B again")))
    assert pairs(v) == {("duplicate_id", ("b",))}


def test_orphan_missing_parent():
    v = validate_data(doc(c("a", 1), c("b", 3, "ghost")))
    assert pairs(v) == {("orphan", ("b", "ghost"))}


def test_orphan_non_root_without_parent():
    v = validate_data(doc(c("a", 1), c("b", 2)))
    assert pairs(v) == {("orphan", ("b",))}


@pytest.mark.parametrize("name", ["", "   ", None, "<absent>"])
def test_missing_name(name):
    b = c("b", 2, "a")
    if name == "<absent>":
        del b["name"]
    else:
        b["name"] = name
    v = validate_data(doc(c("a", 1), b))
    assert pairs(v) == {("missing_name", ("b",))}


def test_duplicate_term_within_concept_is_case_and_space_insensitive():
    v = validate_data(doc(c("a", 1, terms=["Heart", "heart ", "lung"])))
    assert pairs(v) == {("duplicate_term", ("a",))}
    assert "heart" in v[0].message


def test_same_term_on_two_concepts_is_allowed():
    assert validate_data(doc(c("a", 1, terms=["x"]), c("b", 2, "a", terms=["x"]))) == []


def test_multiple_parents():
    v = validate_data(
        doc(c("a", 1), c("b", 2, "a"), c("b2", 2, "a"), {"id": "k", "name": "K", "level": 3, "parents": ["b", "b2"]})
    )
    assert pairs(v) == {("multiple_parents", ("k", "b", "b2"))}
    assert "tree" in v[0].message


def test_single_element_parents_list_is_a_parent():
    d = doc(c("a", 1), {"id": "b", "name": "B", "level": 2, "parents": ["a"]})
    assert validate_data(d) == []
    assert Hierarchy.from_dict(d).parent("b") == "a"


@pytest.mark.parametrize("level", [0, 5, -1, "x", None, "two"])
def test_bad_level(level):
    v = validate_data(doc(c("a", 1), c("b", level, "a")))
    assert pairs(v) == {("bad_level", ("b",))}


@pytest.mark.parametrize("cid", ["Upper", "has space", "_leading", "semi;colon", "é"])
def test_bad_id(cid):
    v = validate_data(doc(c("a", 1), c(cid, 2, "a")))
    assert pairs(v) == {("bad_id", (cid,))}


@pytest.mark.parametrize(
    "matcher",
    [
        {"source": "medmcqa", "field": "subject_name"},  # no equals
        {"source": "medmcqa", "equals": "Surgery"},  # no field
        {"field": "subject_name", "equals": "Surgery"},  # no source
        "subject_name=Surgery",  # not an object
    ],
)
def test_bad_matcher(matcher):
    v = validate_data(doc(c("a", 1, matchers=[matcher])))
    assert pairs(v) == {("bad_matcher", ("a",))}


def test_bad_format():
    assert kinds(validate_data([])) == {"bad_format"}
    assert kinds(validate_data({"concepts": "nope"})) == {"bad_format"}
    assert kinds(validate_data({"format": "other/9", "concepts": []})) == {"bad_format"}
    assert kinds(validate_data({"concepts": [{"name": "no id", "level": 1}]})) == {"bad_format"}


def test_wildcard_matcher_source_is_valid():
    assert validate_data(doc(c("a", 1, matchers=[{"source": "*", "field": "f", "equals": "v"}]))) == []


# --------------------------------------------------------------------------------------------
# validation: everything at once
# --------------------------------------------------------------------------------------------


def many_violations_doc() -> dict:
    return doc(
        c("root", 1),
        c("dom", 2, "root"),
        c("dom2", 2, "root"),
        c("spec", 3, "dom"),
        c("spec", 3, "dom", name="again"),  # duplicate_id
        c("skipper", 4, "dom"),  # level_skip
        c("lost", 3, "ghost"),  # orphan (parent missing)
        c("floating", 2),  # orphan (no parent)
        c("noname", 3, "dom", name=""),  # missing_name
        c("dupterm", 3, "dom", terms=["Heart", "heart"]),  # duplicate_term
        {"id": "twoparents", "name": "T", "level": 3, "parents": ["dom", "dom2"]},  # multiple_parents
        c("cy1", 3, "cy2"),  # cycle (+ level_skip)
        c("cy2", 4, "cy1"),
        c("selfie", 2, "selfie"),  # cycle (self loop)
        c("deep", 5, "spec"),  # bad_level
        c("Bad ID", 3, "dom"),  # bad_id
        c("badm", 3, "dom", matchers=[{"source": "medmcqa", "field": "subject_name"}]),  # bad_matcher
    )


EXPECTED_MANY = {
    ("duplicate_id", ("spec",)),
    ("level_skip", ("skipper", "dom")),
    ("orphan", ("lost", "ghost")),
    ("orphan", ("floating",)),
    ("missing_name", ("noname",)),
    ("duplicate_term", ("dupterm",)),
    ("multiple_parents", ("twoparents", "dom", "dom2")),
    ("cycle", ("cy1", "cy2")),
    ("level_skip", ("cy1", "cy2")),
    ("cycle", ("selfie",)),
    ("bad_level", ("deep",)),
    ("bad_id", ("Bad ID",)),
    ("bad_matcher", ("badm",)),
}


def test_every_violation_is_reported_with_ids():
    v = validate_data(many_violations_doc())
    assert pairs(v) == EXPECTED_MANY
    assert len(v) == len(EXPECTED_MANY)  # each once
    assert kinds(v) >= {
        "cycle",
        "level_skip",
        "duplicate_id",
        "orphan",
        "missing_name",
        "duplicate_term",
        "multiple_parents",
        "bad_level",
        "bad_id",
        "bad_matcher",
    }


def test_from_dict_raises_with_every_violation():
    with pytest.raises(HierarchyError) as ei:
        Hierarchy.from_dict(many_violations_doc())
    assert pairs(ei.value.violations) == EXPECTED_MANY
    msg = str(ei.value)
    for kind, ids in EXPECTED_MANY:
        assert kind in msg
        for i in ids:
            assert i in msg


def test_violation_str_format():
    assert str(Violation("orphan", ("b", "ghost"), "m")) == "orphan: [b,ghost] m"
    assert str(Violation("bad_format", (), "m")) == "bad_format: [-] m"
    e = HierarchyError("plain message")
    assert e.violations[0].kind == "invalid" and "plain message" in str(e)


def test_empty_parent_string_means_root():
    hh = Hierarchy.from_dict(doc(c("a", 1, ""), c("b", 2, "a")))
    assert hh.parent("a") is None
    assert hh.ancestors("b") == ["a"]
    assert hh.to_dict()["concepts"][0]["parent"] is None


# --------------------------------------------------------------------------------------------
# queries
# --------------------------------------------------------------------------------------------


def test_queries(h):
    assert h.children("c") == ["d", "e"]
    assert h.parent("d") == "c" and h.parent("a") is None
    assert h.ancestors("d") == ["c", "b", "a"]
    assert h.descendants("b") == {"c", "d", "e", "f"}
    assert h.subtree("c") == {"c", "d", "e"}
    assert h.path("d") == ["A", "B", "C", "D"]
    assert h.path_str("b") == "A › B"
    assert h.expand_selection(["c", "g"]) == {"c", "d", "e", "g", "h"}
    assert "gamma" not in h and "c" in h
    assert h.find("shared") == ["c", "h"]
    with pytest.raises(HierarchyError, match="nope"):
        h.concept("nope")


def test_ordered_ids_depth_first_sorted_and_stable(h):
    assert h.ordered_ids() == ["a", "b", "c", "d", "e", "f", "g", "h", "r", "s"]
    # input order does not matter
    shuffled = small()
    shuffled["concepts"] = list(reversed(shuffled["concepts"]))
    assert Hierarchy.from_dict(shuffled).ordered_ids() == h.ordered_ids()
    assert [x["id"] for x in h.to_dict()["concepts"]] == h.ordered_ids()


# --------------------------------------------------------------------------------------------
# default hierarchy
# --------------------------------------------------------------------------------------------


def test_default_hierarchy_is_valid(default_h):
    from hdsu_core.paths import DEFAULT_HIERARCHY

    data = json.loads(DEFAULT_HIERARCHY.read_text(encoding="utf-8"))
    assert validate_data(data) == []
    assert data["format"] == FORMAT
    assert len(default_h) >= 150
    counts = default_h.level_counts()
    assert set(counts) == {1, 2, 3, 4} and all(counts[lvl] > 0 for lvl in counts)
    for root in default_h.roots():
        assert default_h.concept(root).level == 1
    for con in default_h.concepts():
        if con.parent:
            assert default_h.concept(con.parent).level == con.level - 1
    for cid in ("surgery", "appendicitis", "anxiety", "depression", "trauma", "ocd"):
        assert cid in default_h
    assert default_h.concept("appendicitis").level == 4
    assert default_h.parent("appendicitis") == "surgery"


def test_default_ordered_ids_stable(default_h):
    again = load_default()
    ids = default_h.ordered_ids()
    assert ids == again.ordered_ids()
    assert len(ids) == len(set(ids)) == len(default_h)
    pos = {cid: i for i, cid in enumerate(ids)}
    for cid in ids:
        p = default_h.parent(cid)
        if p:
            assert pos[p] < pos[cid]


# --------------------------------------------------------------------------------------------
# edits
# --------------------------------------------------------------------------------------------


def test_add_valid(h):
    con = h.add(Concept("z", "Zeta", 4, "f", terms=["zeta"]))
    assert con.id == "z" and h.parent("z") == "f" and "z" in h.children("f")
    h.add({"id": "s2", "name": "S2", "level": 3, "parent": "s"})
    assert h.concept("s2").level == 3


@pytest.mark.parametrize(
    "bad, kind",
    [
        (Concept("d", "dup", 4, "c"), "duplicate_id"),
        (Concept("z", "Z", 4, "b"), "level_skip"),
        (Concept("z", "Z", 3, "ghost"), "orphan"),
        (Concept("z", "", 3, "b"), "missing_name"),
        (Concept("Z Z", "Z", 3, "b"), "bad_id"),
        (Concept("z", "Z", 5, "d"), "bad_level"),
        (Concept("z", "Z", 3, "b", terms=["x", "X"]), "duplicate_term"),
        (Concept("z", "Z", 3, "b", matchers=[{"source": "m"}]), "bad_matcher"),
    ],
)
def test_add_invalid_leaves_hierarchy_unchanged(h, bad, kind):
    before = copy.deepcopy(h.to_dict())
    with pytest.raises(HierarchyError) as ei:
        h.add(bad)
    assert kind in kinds(ei.value.violations)
    assert h.to_dict() == before


def test_rename(h):
    h.rename("c", "  Gamma concept ")
    assert h.concept("c").name == "Gamma concept"
    before = h.to_dict()
    with pytest.raises(HierarchyError) as ei:
        h.rename("c", "   ")
    assert pairs(ei.value.violations) == {("missing_name", ("c",))}
    assert h.to_dict() == before
    with pytest.raises(HierarchyError):
        h.rename("nope", "X")


def test_update_terms(h):
    h.set_terms("c", ["gamma", " new term ", "", "  "])
    assert h.concept("c").terms == ["gamma", "new term"]
    before = h.to_dict()
    with pytest.raises(HierarchyError) as ei:
        h.set_terms("c", ["gamma", "Gamma"])
    assert pairs(ei.value.violations) == {("duplicate_term", ("c",))}
    assert h.to_dict() == before


def test_update_other_fields_and_refuse_structure(h):
    h.update(
        "c",
        description="desc",
        codes={"icd10cm": "X00"},
        matchers=[{"source": "mhqa", "field": "topic", "equals": "C"}],
    )
    con = h.concept("c")
    assert con.description == "desc" and con.codes == {"icd10cm": "X00"} and con.matchers[0]["equals"] == "C"
    before = h.to_dict()
    for bad in ({"level": 2}, {"parent": "a"}, {"id": "zz"}):
        with pytest.raises(HierarchyError, match="cannot update"):
            h.update("c", **bad)
    with pytest.raises(HierarchyError) as ei:
        h.update("c", matchers=[{"source": "mhqa"}])
    assert kinds(ei.value.violations) == {"bad_matcher"}
    assert h.to_dict() == before


def test_move_leaf_changes_level(h):
    h.move("d", "g")  # L4 under an L2 -> becomes L3
    assert h.parent("d") == "g" and h.concept("d").level == 3
    assert "d" not in h.children("c")


def test_move_subtree_same_depth_keeps_levels(h):
    h.move("c", "g")  # L3 with L4 children under another L2
    assert h.parent("c") == "g"
    assert h.concept("c").level == 3
    assert h.concept("d").level == 4 and h.concept("e").level == 4
    assert h.parent("d") == "c"


def test_move_subtree_up_shifts_whole_subtree(h):
    h.move("b", None)  # L2 subtree becomes a root
    assert h.parent("b") is None and "b" in h.roots()
    assert [h.concept(x).level for x in ("b", "c", "d", "e", "f")] == [1, 2, 3, 3, 2]
    assert validate_data(h.to_dict()) == []


def test_move_subtree_down_shifts_whole_subtree(h):
    h.move("g", "s")  # L2 with an L3 child under L2 -> L3 with an L4 child
    assert h.concept("g").level == 3 and h.concept("h").level == 4


def test_move_too_deep_is_rejected_and_unchanged(h):
    before = copy.deepcopy(h.to_dict())
    with pytest.raises(HierarchyError) as ei:
        h.move("c", "h")  # c would be L4, its children L5
    assert "bad_level" in kinds(ei.value.violations)
    ids = {i for v in ei.value.violations for i in v.concept_ids}
    assert {"d", "e"} <= ids
    assert h.to_dict() == before


def test_move_under_own_descendant_is_a_cycle(h):
    before = copy.deepcopy(h.to_dict())
    for target in ("d", "c", "b"):
        with pytest.raises(HierarchyError) as ei:
            h.move("b", target)
        assert kinds(ei.value.violations) == {"cycle"}
        assert "b" in ei.value.violations[0].concept_ids
    assert h.to_dict() == before


def test_move_unknown_ids(h):
    with pytest.raises(HierarchyError):
        h.move("nope", "a")
    with pytest.raises(HierarchyError):
        h.move("c", "nope")


def test_move_on_default_hierarchy(dh):
    # an L3 with L4 children under another L2 keeps its levels
    n_children = len(dh.children("surgery"))
    dh.move("surgery", "head_and_neck")
    assert dh.parent("surgery") == "head_and_neck"
    assert dh.concept("surgery").level == 3 and dh.concept("appendicitis").level == 4
    assert len(dh.children("surgery")) == n_children
    # under an L3 it would become L4 with L5 children: refused, nothing changes
    before = dh.to_dict()
    with pytest.raises(HierarchyError):
        dh.move("surgery", "ent")
    assert dh.to_dict() == before
    # an L4 leaf can move under another L3
    dh.move("appendicitis", "ent")
    assert dh.parent("appendicitis") == "ent" and dh.concept("appendicitis").level == 4
    with pytest.raises(HierarchyError, match="cycle"):
        dh.move("surgical_specialties", "anaesthesia")


def test_delete_subtree(h):
    removed = h.delete("c")
    assert removed == ["c", "d", "e"]
    assert all(x not in h for x in removed)
    assert h.children("b") == ["f"]
    assert validate_data(h.to_dict()) == []


def test_delete_reattach_moves_children_up_with_subtrees(h):
    assert h.delete("b", mode="reattach") == ["b"]
    assert "b" not in h
    assert h.parent("c") == "a" and h.parent("f") == "a"
    assert h.concept("c").level == 2 and h.concept("f").level == 2
    assert h.parent("d") == "c" and h.concept("d").level == 3 and h.concept("e").level == 3
    assert validate_data(h.to_dict()) == []


def test_delete_reattach_root_makes_children_roots(h):
    h.delete("r", mode="reattach")
    assert "s" in h.roots() and h.concept("s").level == 1 and h.parent("s") is None


def test_delete_errors(h):
    before = h.to_dict()
    with pytest.raises(HierarchyError, match="mode"):
        h.delete("c", mode="bogus")
    with pytest.raises(HierarchyError):
        h.delete("nope")
    assert h.to_dict() == before


def test_delete_reattach_on_default(dh):
    dh.delete("surgical_specialties", mode="reattach")
    assert dh.parent("surgery") == "clinical_sciences" and dh.concept("surgery").level == 2
    assert dh.concept("appendicitis").level == 3 and dh.parent("appendicitis") == "surgery"


# --------------------------------------------------------------------------------------------
# JSON io
# --------------------------------------------------------------------------------------------


def test_save_load_round_trip(h, tmp_path):
    out = tmp_path / "sub" / "h.json"
    h.save(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["h.json"]  # no temp files left
    back = Hierarchy.load(out)
    assert back.to_dict() == h.to_dict()
    assert back.name == "test"
    raw = json.loads(out.read_text(encoding="utf-8"))
    assert raw["format"] == FORMAT and validate_data(raw) == []
    # overwrite atomically
    h.rename("a", "Alpha")
    h.save(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["h.json"]
    assert Hierarchy.load(out).concept("a").name == "Alpha"


def test_default_round_trip(default_h, tmp_path):
    out = tmp_path / "default.json"
    default_h.save(out)
    back = Hierarchy.load(out)
    assert back.to_dict() == default_h.to_dict()
    assert default_h.diff(back) == {"added": [], "removed": [], "changed": {}}


def test_load_errors(tmp_path):
    with pytest.raises(HierarchyError, match="not found"):
        Hierarchy.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(HierarchyError, match="not valid JSON"):
        Hierarchy.load(bad)
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps(many_violations_doc()), encoding="utf-8")
    with pytest.raises(HierarchyError) as ei:
        Hierarchy.load(invalid)
    assert pairs(ei.value.violations) == EXPECTED_MANY


def test_copy_is_independent(h):
    other = h.copy()
    other.rename("a", "changed")
    assert h.concept("a").name == "A"


# --------------------------------------------------------------------------------------------
# diff
# --------------------------------------------------------------------------------------------


def test_diff(h):
    newer = h.copy()
    newer.add(Concept("z", "Z", 3, "g"))
    newer.delete("f")
    newer.rename("c", "Gamma")
    newer.set_terms("d", ["delta", "dee"])
    d = h.diff(newer)
    assert d["added"] == ["z"]
    assert d["removed"] == ["f"]
    assert d["changed"] == {"c": {"name": ["C", "Gamma"]}, "d": {"terms": [["delta"], ["delta", "dee"]]}}
    assert diff_summary(d) == "+1 added, -1 removed, ~2 changed"
    assert diff_summary(h.diff(h.copy())) == "no changes"
    moved = h.copy()
    moved.move("c", "g")
    assert moved.diff(h)["changed"]["c"] == {"parent": ["g", "b"]}
