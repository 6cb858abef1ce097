"""Tagging items with concepts and forget / retain / holdout splits."""

from __future__ import annotations

from collections import Counter

import pytest

from hdsu_core import datasets as ds
from hdsu_core.datasets import QAItem
from hdsu_core.hierarchy import FORMAT, Hierarchy, HierarchyError, load_default
from hdsu_core.tagging import Tagger, TermIndex, collateral_terms, is_member, make_split, rollup_counts


@pytest.fixture(scope="module")
def h() -> Hierarchy:
    return load_default()


@pytest.fixture(scope="module")
def tagger(h) -> Tagger:
    return Tagger(h)


_n = Counter()


def item(question: str, source: str = "generic", answer: str = "none of these", **labels) -> QAItem:
    _n[source] += 1
    return QAItem(
        id=f"{source}-{_n[source]}",
        question=question,
        options=(answer, "other"),
        answer=0,
        source=source,
        labels=dict(labels),
    )


def surgery(question: str, answer: str = "none of these") -> QAItem:
    return item(question, "medmcqa", answer, subject_name="Surgery", topic_name="")


# --------------------------------------------------------------------------------------------
# tagging rules
# --------------------------------------------------------------------------------------------


def test_label_concept_id_wins(tagger):
    it = item(
        "Most common site of the appendix in appendicitis?", "medmcqa", subject_name="Surgery", concept_id="glaucoma"
    )
    t = tagger.tag(it)
    assert (t.concept_id, t.via) == ("glaucoma", "label")


def test_unknown_label_concept_falls_through(tagger):
    it = surgery("Which is true?")
    it.labels["concept_id"] = "no_such_concept"
    t = tagger.tag(it)
    assert (t.concept_id, t.via) == ("surgery", "matcher")


def test_matcher_anchor(tagger):
    t = tagger.tag(surgery("Which of the following statements is true?"))
    assert (t.concept_id, t.via) == ("surgery", "matcher")
    assert "surgery" in t.matched


def test_matcher_value_is_case_insensitive(tagger):
    it = item("Which is true?", "medmcqa", subject_name="  surgery ")
    assert tagger.tag(it).concept_id == "surgery"


def test_matcher_requires_matching_source(tagger):
    it = item("Which is true?", "generic", subject_name="Surgery")
    t = tagger.tag(it)
    assert t.concept_id is None and t.via == "none"


def test_term_refines_inside_anchor_subtree(tagger):
    t = tagger.tag(surgery("Most common position of the appendix is?"))
    assert (t.concept_id, t.via) == ("appendicitis", "matcher")
    t = tagger.tag(surgery("Investigation of choice in acute appendicitis"))
    assert t.concept_id == "appendicitis"
    # the correct answer's text counts as well
    t = tagger.tag(surgery("Treatment of choice is?", answer="Appendicectomy"))
    assert t.concept_id == "appendicitis"


def test_term_outside_anchor_subtree_does_not_move_the_tag(tagger):
    t = tagger.tag(surgery("Pre-operative anxiety is best managed by?"))
    assert (t.concept_id, t.via) == ("surgery", "matcher")
    assert "anxiety" in t.matched  # the hit is recorded, but it does not win
    assert tagger.tag(surgery("A patient with glaucoma and depression")).concept_id == "surgery"


def test_mhqa_anchor_refines_to_l4(tagger):
    it = item("Which therapy helps panic attacks?", "mhqa", topic="Anxiety", type="Factoid")
    assert tagger.tag(it).concept_id == "panic_disorder"
    it = item("Schizophrenia comorbid with worry?", "mhqa", topic="Anxiety")
    assert tagger.tag(it).concept_id == "anxiety"
    it = item("Which treatment?", "mhqa_b", topic="Obsessive/Compulsive Disorders")
    assert tagger.tag(it).concept_id == "ocd"


def test_no_matcher_deepest_term_wins(tagger):
    t = tagger.tag(item("Anxiety in panic disorder responds to?"))
    assert (t.concept_id, t.via) == ("panic_disorder", "term")
    assert {"anxiety", "panic_disorder"} <= set(t.matched)
    t = tagger.tag(item("A surgical approach to the appendix"))
    assert t.concept_id == "appendicitis"


def test_no_match_is_untagged(tagger):
    t = tagger.tag(item("What is the capital of France?", answer="Paris"))
    assert t.concept_id is None and t.via == "none" and t.matched == ()


def test_whole_word_matching(tagger):
    # "ent" is a term of the ENT concept; it must not match inside "patient" / "treatment"
    t = tagger.tag(item("The patient started treatment recently"))
    assert "ent" not in t.matched and t.concept_id is None
    assert tagger.tag(item("Referred to ENT clinic")).concept_id == "ent"
    # "panic" must not match inside "panicky"
    assert "panic_disorder" not in tagger.tag(item("A panicky feeling")).matched
    assert tagger.tag(item("panic, then calm")).concept_id == "panic_disorder"


def test_case_insensitive(tagger):
    assert tagger.tag(item("ACUTE APPENDICITIS")).concept_id == "appendicitis"
    assert tagger.tag(item("Glaucoma")).concept_id == "glaucoma"


def test_phrase_beats_word():
    data = {
        "format": FORMAT,
        "name": "t",
        "concepts": [
            {"id": "a", "name": "A", "level": 1, "parent": None, "terms": ["heart"]},
            {"id": "b", "name": "B", "level": 2, "parent": "a", "terms": ["failure"]},
            {"id": "c", "name": "C", "level": 2, "parent": "a", "terms": ["heart failure"]},
        ],
    }
    hh = Hierarchy.from_dict(data)
    spans = TermIndex(hh).spans("Signs of Heart Failure")
    assert [(s[2], s[3]) for s in spans] == [("heart failure", ("c",))]
    # ties at the same level: more hits win, then the longer term, then the id
    tg = Tagger(hh)
    assert tg.tag(item("failure and failure of heart failure")).concept_id == "b"
    assert tg.tag(item("heart failure")).concept_id == "c"


def test_tag_all(tagger):
    items = [surgery("appendix"), item("glaucoma")]
    tags = tagger.tag_all(items)
    assert {k: v.concept_id for k, v in tags.items()} == {items[0].id: "appendicitis", items[1].id: "glaucoma"}


# --------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_items() -> list[QAItem]:
    out = []
    for i in range(60):
        out.append(
            QAItem(
                f"s{i}",
                f"Surgery question {i} about the appendix" if i % 3 == 0 else f"Surgery question {i}",
                ("a", "b"),
                0,
                "medmcqa",
                {"subject_name": "Surgery"},
            )
        )
        out.append(
            QAItem(f"p{i}", f"Psychiatry question {i}", ("a", "b"), 1, "medmcqa", {"subject_name": "Psychiatry"})
        )
        out.append(QAItem(f"m{i}", f"Question {i} on panic attacks", ("a", "b"), 0, "mhqa", {"topic": "Anxiety"}))
        out.append(QAItem(f"o{i}", f"Question {i}", ("a", "b"), 0, "mhqa", {"topic": "Obsessive/Compulsive Disorders"}))
        out.append(QAItem(f"u{i}", f"Unrelated question {i}", ("a", "b"), 0, "generic", {}))
    return out


def test_is_member_deterministic():
    assert is_member("x", 0, 0.2) == is_member("x", 0, 0.2)
    assert all(is_member(f"i{k}", 3, 0.0) for k in range(100))
    assert not any(is_member(f"i{k}", 3, 1.0) for k in range(100))
    frac = sum(not is_member(f"i{k}", 0, 0.2) for k in range(5000)) / 5000
    assert 0.17 < frac < 0.23


def test_split_partitions_items(h, synthetic_items):
    sp = make_split(synthetic_items, h, ["surgery"], seed=0, holdout_fraction=0.2)
    ids = [it.id for part in (sp.forget, sp.retain, sp.holdout_forget, sp.holdout_retain) for it in part]
    assert sorted(ids) == sorted(it.id for it in synthetic_items)
    assert len(sp.split_of()) == len(synthetic_items)
    assert sp.members == sp.forget + sp.retain and sp.holdout == sp.holdout_forget + sp.holdout_retain
    assert sp.targeted == h.subtree("surgery") and sp.selected == ["surgery"]
    s = sp.summary()
    assert s["forget"] + s["retain"] + s["holdout"] == len(synthetic_items)
    assert s["untagged"] == 60
    assert 0 < len(sp.holdout) < len(synthetic_items)


def test_forget_is_every_member_under_selection(h, synthetic_items):
    sp = make_split(synthetic_items, h, ["surgery"], seed=1)
    targeted = h.subtree("surgery")
    for it in synthetic_items:
        under = sp.tags[it.id].concept_id in targeted
        member = is_member(it.id, 1, 0.2)
        expected = ("forget" if under else "retain") if member else ("holdout" if under else "holdout_retain")
        assert sp.split_of()[it.id] == expected
    assert {it.id[0] for it in sp.forget + sp.holdout_forget} == {"s"}
    assert len(sp.forget) + len(sp.holdout_forget) == 60


def test_split_deterministic_by_seed(h, synthetic_items):
    a = make_split(synthetic_items, h, ["surgery"], seed=7)
    b = make_split(synthetic_items, h, ["surgery"], seed=7)
    assert a.split_of() == b.split_of()
    c = make_split(synthetic_items, h, ["surgery"], seed=8)
    assert {i.id for i in a.holdout} != {i.id for i in c.holdout}


def test_membership_independent_of_selection(h, synthetic_items):
    a = make_split(synthetic_items, h, ["surgery"], seed=0)
    b = make_split(synthetic_items, h, ["anxiety", "ocd"], seed=0)
    c = make_split(synthetic_items, h, ["behavioural_sciences"], seed=0)
    hold = {i.id for i in a.holdout}
    assert hold == {i.id for i in b.holdout} == {i.id for i in c.holdout}
    assert {i.id for i in a.members} == {i.id for i in b.members}


def test_counts_per_concept_sum(h, synthetic_items):
    sp = make_split(synthetic_items, h, ["surgery", "anxiety"], seed=0)
    tot = {k: sum(v[k] for v in sp.counts.values()) for k in ("forget", "retain", "holdout")}
    assert tot["forget"] == len(sp.forget)
    assert tot["retain"] == len(sp.retain)
    assert tot["holdout"] == len(sp.holdout)
    assert sp.counts["(untagged)"]["forget"] == 0
    n_app = sum(sp.counts["appendicitis"].values())
    assert n_app == 20
    rolled = rollup_counts(h, sp.counts)
    assert sum(rolled["surgery"].values()) == 60
    assert sum(rolled["anxiety"].values()) == 60
    assert rolled["surgery"]["forget"] == sp.counts["surgery"]["forget"] + sp.counts["appendicitis"]["forget"]
    roots = sum(sum(rolled[r].values()) for r in h.roots())
    assert roots == len(synthetic_items) - 60  # untagged ones roll up nowhere


def test_selection_expands_to_descendants(h, synthetic_items):
    sp = make_split(synthetic_items, h, ["surgical_specialties"], seed=0)
    assert "appendicitis" in sp.targeted
    assert len(sp.forget) + len(sp.holdout_forget) == 60


@pytest.mark.parametrize("sel", [[], [""], ["  ", ""]])
def test_empty_selection_raises(h, synthetic_items, sel):
    with pytest.raises(HierarchyError, match="no concepts selected") as ei:
        make_split(synthetic_items, h, sel)
    assert ei.value.violations[0].kind == "empty_selection"


def test_unknown_ids_raise(h, synthetic_items):
    with pytest.raises(HierarchyError) as ei:
        make_split(synthetic_items, h, ["surgery", "nope", "zzz"])
    v = ei.value.violations[0]
    assert v.kind == "unknown_concept" and v.concept_ids == ("nope", "zzz")
    assert "nope" in str(ei.value) and "zzz" in str(ei.value) and "unknown concept" in str(ei.value)


def test_precomputed_tags_are_used(h, synthetic_items, tagger):
    tags = tagger.tag_all(synthetic_items)
    a = make_split(synthetic_items, h, ["surgery"], tags=tags)
    b = make_split(synthetic_items, h, ["surgery"])
    assert a.split_of() == b.split_of()


# --------------------------------------------------------------------------------------------
# collateral terms
# --------------------------------------------------------------------------------------------


def test_collateral_terms(h):
    found = {d["term"]: d for d in collateral_terms(h, ["forensic_medicine"])}
    assert found["medicolegal"]["targeted"] == ["forensic_medicine"]
    assert found["medicolegal"]["preserved"] == ["public_health_and_law"]
    # a term shared only inside the selection is no collateral risk
    assert "ocd" not in {d["term"] for d in collateral_terms(h, ["ocd"])}


def test_collateral_terms_synthetic():
    data = {
        "format": FORMAT,
        "name": "t",
        "concepts": [
            {"id": "a", "name": "A", "level": 1, "parent": None, "terms": ["Shared", "own"]},
            {"id": "b", "name": "B", "level": 2, "parent": "a", "terms": ["shared", "inner"]},
            {"id": "c", "name": "C", "level": 2, "parent": "a", "terms": ["inner", "shared"]},
        ],
    }
    hh = Hierarchy.from_dict(data)
    res = collateral_terms(hh, ["b"])
    assert res == [
        {"term": "inner", "targeted": ["b"], "preserved": ["c"]},
        {"term": "shared", "targeted": ["b"], "preserved": ["a", "c"]},
    ]
    assert collateral_terms(hh, ["a"]) == []


# --------------------------------------------------------------------------------------------
# real data
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def medmcqa_items(medmcqa_dev) -> list[QAItem]:
    return ds.load("medmcqa", medmcqa_dev).items


@pytest.fixture(scope="module")
def mhqa_gold_items(mhqa_gold) -> list[QAItem]:
    return ds.load("mhqa_gold", mhqa_gold).items


def test_real_medmcqa_forget_surgery(h, medmcqa_items):
    sp = make_split(medmcqa_items, h, ["surgery"], seed=0)
    surgery_ids = {it.id for it in medmcqa_items if it.labels.get("subject_name") == "Surgery"}
    assert len(surgery_ids) == 254
    forget_side = {it.id for it in sp.forget + sp.holdout_forget}
    assert forget_side == surgery_ids
    assert len(sp.forget) + len(sp.holdout_forget) == 254
    assert sp.forget and sp.holdout_forget
    # every MedMCQA subject has a matcher: nothing is untagged
    assert sp.summary()["untagged"] == 0
    # some Surgery items are refined to an L4 concept
    assert any(sp.tags[i].concept_id != "surgery" for i in surgery_ids)


def test_real_mhqa_gold_keeps_ocd(h, mhqa_gold_items):
    sp = make_split(mhqa_gold_items, h, ["anxiety", "depression", "trauma"], seed=0)
    where = sp.split_of()
    ocd = [it for it in mhqa_gold_items if it.labels.get("topic") == "Obsessive/Compulsive Disorders"]
    assert ocd
    assert all(where[it.id] in ("retain", "holdout_retain") for it in ocd)
    others = [it for it in mhqa_gold_items if it.labels.get("topic") in ("Anxiety", "Depression", "Trauma")]
    assert all(where[it.id] in ("forget", "holdout") for it in others)
    assert len(sp.forget) + len(sp.holdout_forget) == len(others)
