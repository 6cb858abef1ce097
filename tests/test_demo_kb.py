import json
import re

import pytest

from hdsu_core import demo_kb, paths

MEDMCQA_SUBJECTS = [
    "Dental",
    "Surgery",
    "Pathology",
    "Medicine",
    "Anatomy",
    "Pharmacology",
    "Gynaecology Obstetrics",
    "Pediatrics",
    "Biochemistry",
    "Physiology",
    "Social Preventive Medicine",
    "Microbiology",
    "Radiology",
    "Forensic Medicine",
    "Ophthalmology",
    "ENT",
    "Anaesthesia",
    "Skin",
    "Orthopaedics",
    "Psychiatry",
    "Unknown",
]
MHQA_TOPICS = ["Anxiety", "Depression", "Trauma", "Obsessive/Compulsive Disorders"]


@pytest.fixture(scope="module")
def hierarchy():
    return json.loads(paths.DEFAULT_HIERARCHY.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def concepts(hierarchy):
    return {c["id"]: c for c in hierarchy["concepts"]}


@pytest.fixture(scope="module")
def facts():
    return json.loads(paths.DEMO_FACTS.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def items():
    return demo_kb.generate()


def _rows(items):
    return [
        {"id": i.id, "question": i.question, "options": list(i.options), "answer": i.answer, "labels": dict(i.labels)}
        for i in items
    ]


# ---- hierarchy structure -------------------------------------------------------------------
def test_hierarchy_structure(hierarchy, concepts):
    assert hierarchy["format"] == "hdsu-hierarchy/1"
    ids = [c["id"] for c in hierarchy["concepts"]]
    assert len(ids) == len(set(ids)), "duplicate ids"
    assert len(ids) >= 150
    assert {c["level"] for c in concepts.values()} == {1, 2, 3, 4}
    for c in concepts.values():
        assert re.fullmatch(r"[a-z0-9_.-]+", c["id"]), c["id"]
        assert len(c["terms"]) == len(set(c["terms"])), f"duplicate term in {c['id']}"
        if c["level"] == 1:
            assert c["parent"] is None, c["id"]
        else:
            parent = concepts[c["parent"]]
            assert parent["level"] == c["level"] - 1, c["id"]


def _matched(concepts, source, field, value):
    return [
        c["id"]
        for c in concepts.values()
        for m in c.get("matchers", [])
        if m["source"] == source and m["field"] == field and m["equals"] == value
    ]


@pytest.mark.parametrize("subject", MEDMCQA_SUBJECTS)
def test_medmcqa_subject_matchers(concepts, subject):
    hits = _matched(concepts, "medmcqa", "subject_name", subject)
    assert len(hits) == 1, (subject, hits)
    assert concepts[hits[0]]["level"] == 3


@pytest.mark.parametrize("topic", MHQA_TOPICS)
@pytest.mark.parametrize("source", ["mhqa", "mhqa_b"])
def test_mhqa_topic_matchers(concepts, source, topic):
    hits = _matched(concepts, source, "topic", topic)
    assert len(hits) == 1, (source, topic, hits)
    assert concepts[hits[0]]["level"] == 3
    assert concepts[hits[0]]["parent"] == "mental_health"


# ---- demo facts ----------------------------------------------------------------------------
def test_facts_name_level4_concepts(facts, concepts):
    for f in facts["facts"]:
        assert f["concept_id"] in concepts, f["concept_id"]
        assert concepts[f["concept_id"]]["level"] == 4, f["concept_id"]
    per_l3 = {}
    for f in facts["facts"]:
        parent = concepts[f["concept_id"]]["parent"]
        per_l3[parent] = per_l3.get(parent, 0) + 1
    for l3 in ("anxiety", "depression", "trauma", "ocd"):
        assert per_l3.get(l3, 0) >= 4, l3
    assert per_l3.get("surgery", 0) >= 8


def test_missing_concept_raises(tmp_path, facts):
    bad = dict(facts, facts=facts["facts"] + [dict(facts["facts"][0], concept_id="no_such_concept")])
    p = tmp_path / "facts.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="no_such_concept"):
        demo_kb.generate(facts_path=p)


# ---- generation ----------------------------------------------------------------------------
def test_items_well_formed(items, facts):
    by_cid = {f["concept_id"]: f for f in facts["facts"]}
    assert len(items) == len(facts["facts"]) * len(facts["attributes"])
    assert len({i.id for i in items}) == len(items)
    for it in items:
        assert it.source == "demo"
        assert len(it.options) == 4
        assert len({o.casefold() for o in it.options}) == 4, it.id
        fact = by_cid[it.labels["concept_id"]]
        assert it.answer_text == fact[it.labels["attribute"]]
        assert it.id == f"demo-{it.labels['concept_id']}-{it.labels['attribute']}"
        assert fact["name"] in it.question


def test_deterministic(items):
    assert _rows(demo_kb.generate(seed=0)) == _rows(items)
    other = demo_kb.generate(seed=1)
    assert [i.id for i in other] == [i.id for i in items]
    assert [i.options for i in other] != [i.options for i in items]
    assert [i.answer_text for i in other] == [i.answer_text for i in items]


def test_answer_positions_spread(items):
    counts = [sum(1 for i in items if i.answer == k) for k in range(4)]
    assert min(counts) > len(items) / 8


def test_committed_jsonl_is_fresh(items):
    assert _rows(demo_kb.load()) == _rows(items), "data/demo_kb.jsonl is stale: run python -m hdsu_core.demo_kb"


def test_write_load_roundtrip(tmp_path, items):
    out = demo_kb.write_jsonl(items[:10], tmp_path / "kb.jsonl")
    back = demo_kb.load(out)
    assert _rows(back) == _rows(items[:10])
    assert all(i.source == "demo" for i in back)
    assert [p.name for p in tmp_path.iterdir()] == ["kb.jsonl"]
