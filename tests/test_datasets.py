"""Dataset loaders: real benchmark files (skipped when absent) and synthetic edge cases."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from hdsu_core import datasets as ds
from hdsu_core.datasets import DatasetError, LoadReport, QAItem

MOJIBAKE = ("Î±", "Î²", "Ã¼", "â€™", "Â®")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list], encoding: str = "utf-8") -> Path:
    with path.open("w", encoding=encoding, newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def reasons(report: LoadReport) -> list[str]:
    return [s.reason for s in report.skipped]


# --------------------------------------------------------------------------------------------
# Real files
# --------------------------------------------------------------------------------------------


def test_real_medmcqa_dev(medmcqa_dev):
    rep = ds.load("medmcqa", medmcqa_dev)
    assert rep.kind == "medmcqa"
    assert len(rep.items) == 2957
    assert rep.skipped == []
    assert all(isinstance(it, QAItem) and it.source == "medmcqa" for it in rep.items)
    assert all(it.labels["subject_name"] for it in rep.items)
    subjects = Counter(it.labels["subject_name"] for it in rep.items)
    assert subjects["Surgery"] == 254
    assert len(subjects) == 21
    assert all(len(it.options) == 4 and 0 <= it.answer < 4 for it in rep.items)
    assert len({it.id for it in rep.items}) == 2957
    # cop is 0-based in this file: the first record has cop 2 -> "Bag and mask".
    first = rep.items[0]
    assert first.id == "406b5b4f-9ad4-42c0-9669-12d038df4ac8"
    assert first.answer_text == "Bag and mask"
    assert first.labels["topic_name"] == ""  # null -> ""
    # Every answer index occurs (0-based detection, no shift).
    assert set(Counter(it.answer for it in rep.items)) == {0, 1, 2, 3}
    # Duplicate option texts are kept with a warning.
    assert all("duplicate option texts" in w.reason for w in rep.warnings)


def test_real_mhqa_gold(mhqa_gold):
    rep = ds.load("mhqa", mhqa_gold)  # auto-detects gold
    assert rep.kind == "mhqa_gold"
    assert len(rep.items) + len(rep.skipped) == 1758
    # One row's number (1) contradicts its correct_option text (option 4): skipped as ambiguous.
    assert len(rep.skipped) <= 5
    assert all("disagrees with correct_option" in r for r in reasons(rep))
    assert {it.labels["topic"] for it in rep.items} == {
        "Anxiety",
        "Depression",
        "Trauma",
        "Obsessive/Compulsive Disorders",
    }
    assert {it.labels["type"] for it in rep.items} <= {"Diagnostic", "Preventive", "Prognostic", "Factoid"}
    assert all(it.source == "mhqa" for it in rep.items)
    # PubMed ids repeat; item ids are unique and carry the pmid.
    ids = [it.id for it in rep.items]
    assert len(set(ids)) == len(ids)
    assert all(it.id.startswith(it.labels["pmid"] + "-") for it in rep.items)
    # Mojibake repaired (e.g. "TNF-Î±" -> "TNF-α").
    assert rep.repaired > 0
    texts = [t for it in rep.items for t in (it.question, *it.options)]
    assert not any(m in t for t in texts for m in MOJIBAKE)
    assert any("TNF-α" in t for t in texts)
    # Answer correctness against the file's own correct_option column.
    with mhqa_gold.open(encoding="utf-8", newline="") as fh:
        raw = list(csv.DictReader(fh))
    by_q = {it.question: it for it in rep.items}
    checked = 0
    for r in raw:
        it = by_q.get(r["question"].strip())
        if it is not None and r["correct_option"] == r[f"option{r['correct_option_number']}"]:
            assert it.answer == int(r["correct_option_number"]) - 1
            checked += 1
    assert checked > 1700
    # Stable across loads.
    assert [it.id for it in ds.load("mhqa_gold", mhqa_gold).items] == ids


def test_real_mhqa_b(mhqa_b):
    rep = ds.load("mhqa", mhqa_b)  # auto-detects MHQA-B
    assert rep.kind == "mhqa_b"
    assert len(rep.items) + len(rep.skipped) == 4981
    assert len(rep.items) >= 4900
    assert all(it.source == "mhqa_b" for it in rep.items)
    assert len({it.id for it in rep.items}) == len(rep.items)
    texts = [t for it in rep.items for t in (it.question, *it.options)]
    assert not any(m in t for t in texts for m in MOJIBAKE)
    assert rep.repaired >= 0  # this file has no mojibake; gold does
    # Option numbers are 1-based floats ("3.0") -> answers 0-based; check against correct_answer.
    with mhqa_b.open(encoding="utf-8", newline="") as fh:
        raw = {r["question"].strip(): r for r in csv.DictReader(fh)}
    agree = 0
    for it in rep.items:
        r = raw[it.question]
        assert it.answer == int(float(r["correct_option_num"])) - 1
        if it.answer_text == r["correct_answer"]:
            agree += 1
    assert agree / len(rep.items) > 0.9  # the rest differ only cosmetically ("Text>")


# --------------------------------------------------------------------------------------------
# MedMCQA variants (synthetic)
# --------------------------------------------------------------------------------------------


def mm(i: int, cop, **extra) -> dict:
    rec = {
        "id": f"q{i}",
        "question": f"Question {i}?",
        "opa": "A1",
        "opb": "B1",
        "opc": "C1",
        "opd": "D1",
        "cop": cop,
        "choice_type": "single",
        "subject_name": "Surgery",
        "topic_name": None,
        "exp": None,
    }
    rec.update(extra)
    return rec


def test_medmcqa_bad_json_line_is_skipped_with_line_number(tmp_path):
    p = write_jsonl(tmp_path / "m.jsonl", [mm(1, 0), "{not json", mm(3, 3)])
    rep = ds.load("medmcqa", p)
    assert [it.id for it in rep.items] == ["q1", "q3"]
    assert len(rep.skipped) == 1
    s = rep.skipped[0]
    assert s.row == 2 and s.file == str(p) and "invalid JSON" in s.reason


def test_medmcqa_json_array_and_hf_variant(tmp_path):
    rows = [
        {
            "question": "Which?",
            "options": ["w", "x", "y", "z"],
            "answer_idx": "C",
            "subject": "Anatomy",
            "topic": "Limbs",
        },
        {"id": "h2", "question": "Other?", "options": ["w", "x"], "answer_idx": 1, "subject": "Anatomy"},
    ]
    p = tmp_path / "hf.json"
    p.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    rep = ds.load("medmcqa", p)
    assert len(rep.items) == 2 and rep.skipped == []
    a, b = rep.items
    assert a.answer == 2 and a.answer_text == "y"
    assert a.labels == {"subject_name": "Anatomy", "topic_name": "Limbs", "choice_type": ""}
    assert a.id.startswith("medmcqa-") and a.id == ds.load("medmcqa", p).items[0].id  # stable hash id
    assert b.id == "h2" and b.answer == 1


def test_medmcqa_cop_base_detection(tmp_path):
    one_based = write_jsonl(tmp_path / "gh.jsonl", [mm(1, 1), mm(2, 4), mm(3, 2)])
    rep = ds.load("medmcqa", one_based)
    assert [it.answer for it in rep.items] == [0, 3, 1]
    zero_based = write_jsonl(tmp_path / "hf.jsonl", [mm(1, 0), mm(2, 3)])
    assert [it.answer for it in ds.load("medmcqa", zero_based).items] == [0, 3]
    ambiguous = write_jsonl(tmp_path / "amb.jsonl", [mm(1, 1), mm(2, 2)])
    rep = ds.load("medmcqa", ambiguous)
    assert [it.answer for it in rep.items] == [1, 2] and rep.warnings
    assert [it.answer for it in ds.load("medmcqa", ambiguous, cop_base=1).items] == [0, 1]
    both = write_jsonl(tmp_path / "both.jsonl", [mm(1, 0), mm(2, 4)])
    with pytest.raises(DatasetError, match="both.jsonl"):
        ds.load("medmcqa", both)
    forced = ds.load("medmcqa", both, cop_base=0)
    assert len(forced.items) == 1 and "out of range" in forced.skipped[0].reason


def test_medmcqa_bad_rows(tmp_path):
    p = write_jsonl(
        tmp_path / "m.jsonl",
        [
            mm(1, 0),
            mm(1, 1),  # duplicate id
            mm(3, 0, question="  "),  # empty question
            mm(4, 0, opc=None),  # missing option
            mm(5, "x"),  # non-numeric cop
            [1, 2],  # not an object
            mm(7, 2.0),  # float cop is fine
        ],
    )
    rep = ds.load("medmcqa", p)
    assert [it.id for it in rep.items] == ["q1", "q7"]
    got = {s.row: s.reason for s in rep.skipped}
    assert "duplicate id 'q1'" in got[2]
    assert got[3] == "empty question"
    assert "option C is empty" in got[4]
    assert "not a number" in got[5]
    assert "not an object" in got[6]


# --------------------------------------------------------------------------------------------
# MHQA (synthetic)
# --------------------------------------------------------------------------------------------

GOLD = [
    "id",
    "topic",
    "type",
    "question",
    "option1",
    "option2",
    "option3",
    "option4",
    "correct_option",
    "correct_option_number",
]
B = [
    "id",
    "valid_question",
    "topic",
    "type",
    "question",
    "option1",
    "option2",
    "option3",
    "option4",
    "correct_answer",
    "correct_option_num",
]


def test_mhqa_gold_rows(tmp_path):
    p = write_csv(
        tmp_path / "gold.csv",
        GOLD,
        [
            ["111", "Anxiety", "Factoid", "Q one?", "a", "b", "c", "d", "c", "3"],
            ["111", "Anxiety", "Factoid", "Q two?", "a", "b", "c", "d", "d", "5"],  # out of range
            ["222", "Trauma", "Diagnostic", "Q three?", "a", "b", "c", "d", "a", "4"],  # conflicts
            ["333", "Trauma", "Diagnostic", "Q four?", "a", "b", "c", "d", " B\n", "2"],  # cosmetic
            ["444", "Depression", "Prognostic", "Q five?", "a", "b", "c", "d", "zzz", "1"],  # no match
        ],
    )
    rep = ds.load("mhqa", p)
    assert rep.kind == "mhqa_gold"
    assert [(it.labels["pmid"], it.answer) for it in rep.items] == [("111", 2), ("333", 1), ("444", 0)]
    got = {s.row: s.reason for s in rep.skipped}
    assert "out of range 1..4" in got[3]
    assert "disagrees" in got[4]
    assert [w.row for w in rep.warnings] == [7]  # row 5 spans lines 5-6 (embedded newline)
    assert ds.load("mhqa_gold", p, answer_conflict="text").items[1].answer == 0
    assert ds.load("mhqa_gold", p, answer_conflict="number").items[1].answer == 3
    with pytest.raises(DatasetError, match="look like mhqa_gold"):
        ds.load("mhqa_b", p)


def test_mhqa_b_float_numbers_and_valid_flag(tmp_path):
    p = write_csv(
        tmp_path / "b.csv",
        B,
        [
            ["1", "True", "Anxiety", "Factoid", "Q1?", "a", "b", "c", "d", "b", "2.0"],
            ["1", "False", "Anxiety", "Factoid", "Q2?", "a", "b", "c", "d", "b", "2.0"],
            ["2", "True", "Anxiety", "Factoid", "Q3?", "a", "b", "c", "d", "d>", "4.0"],
            ["3", "True", "Anxiety", "Factoid", "Q4?", "a", "b", "c", "d", "a", "1.5"],
            ["4", "maybe", "Anxiety", "Factoid", "Q5?", "a", "b", "c", "d", "a", "1.0"],
        ],
    )
    rep = ds.load("mhqa", p)
    assert rep.kind == "mhqa_b"
    assert [it.answer for it in rep.items] == [1, 3]
    assert all(it.source == "mhqa_b" for it in rep.items)
    got = {s.row: s.reason for s in rep.skipped}
    assert got[3] == "valid_question is False"
    assert "not an integer" in got[5]
    assert "expected True/False" in got[6]


def test_mhqa_missing_column_and_not_mhqa(tmp_path):
    p = write_csv(
        tmp_path / "g.csv",
        [c for c in GOLD if c != "question"],
        [["1", "Anxiety", "Factoid", "a", "b", "c", "d", "a", "1"]],
    )
    with pytest.raises(DatasetError, match=r"g\.csv.*missing required column.*question"):
        ds.load("mhqa", p)
    q = write_csv(tmp_path / "other.csv", ["x", "y"], [["1", "2"]])
    with pytest.raises(DatasetError, match="not an MHQA file"):
        ds.load("mhqa", q)


def test_mhqa_repairs_mojibake(tmp_path):
    p = write_csv(
        tmp_path / "gold.csv",
        GOLD,
        [
            ["1", "Anxiety", "Factoid", "Role of TNF-Î± here?", "TNF-Î± up", "down", "none", "both", "TNF-Î± up", "1"],
        ],
    )
    rep = ds.load("mhqa_gold", p)
    it = rep.items[0]
    assert it.question == "Role of TNF-α here?" and it.options[0] == "TNF-α up"
    assert rep.repaired == 3


# --------------------------------------------------------------------------------------------
# Generic / demo (synthetic)
# --------------------------------------------------------------------------------------------


def test_generic_jsonl(tmp_path):
    p = write_jsonl(
        tmp_path / "kb.jsonl",
        [
            {
                "id": "a",
                "question": "Q?",
                "options": ["x", "y", "z"],
                "answer": 2,
                "labels": {"ward": "ICU"},
                "concept_id": "surgery",
            },
            {"id": "b", "question": "Q2?", "options": ["x", "y"], "answer_letter": "b"},
            {"id": "a", "question": "Q3?", "options": ["x", "y"], "answer": 0},  # dup id
            {"id": "c", "question": "Q4?", "options": ["x"], "answer": 0},  # < 2 options
            {"id": "d", "question": "Q5?", "options": ["x", "y"], "answer": 2},  # out of range
            {"id": "e", "question": "Q6?", "options": ["x", "y"], "answer": 0, "answer_letter": "B"},
            {"id": "f", "question": "Q7?", "options": ["x", "x"], "answer": 1},  # dup texts: kept
            {"id": "g", "question": "Q8?", "options": ["x", "y"], "answer": True},
        ],
    )
    rep = ds.load("generic", p)
    assert [it.id for it in rep.items] == ["a", "b", "f"]
    a, b, f = rep.items
    assert a.answer_text == "z" and a.source == "generic"
    assert a.labels == {"ward": "ICU", "concept_id": "surgery"}
    assert b.answer == 1
    got = {s.row: s.reason for s in rep.skipped}
    assert "duplicate id 'a'" in got[3]
    assert "at least 2" in got[4]
    assert "out of range" in got[5]
    assert "disagree" in got[6]
    assert "boolean" in got[8]
    assert [w.row for w in rep.warnings] == [7]


def test_generic_csv(tmp_path):
    p = write_csv(
        tmp_path / "kb.csv",
        ["id", "question", "option_a", "option_b", "option_c", "answer", "concept_id", "Ward"],
        [
            ["1", "Q?", "x", "y", "z", "C", "surgery", "ICU"],
            ["2", "Q2?", "x", "y", "", "1", "", ""],  # 0-based int, 2 options
            ["3", "Q3?", "x", "y", "", "c", "", ""],  # letter out of range
            ["4", "Q4?", "x", "", "z", "A", "", ""],  # gap in options
            ["5", "Q5?", "x", "y", "z", "2.0", "", ""],  # float index
            ["6", "Q6?", "x", "y", "z", "3", "", ""],  # int out of range
            ["1", "Q7?", "x", "y", "z", "A", "", ""],  # dup id
        ],
    )
    rep = ds.load("generic", p)
    assert [(it.id, it.answer) for it in rep.items] == [("1", 2), ("2", 1), ("5", 2)]
    assert rep.items[0].labels == {"ward": "ICU", "concept_id": "surgery"}
    assert rep.items[1].options == ("x", "y")
    got = {s.row: s.reason for s in rep.skipped}
    assert set(got) == {4, 5, 7, 8}
    assert "out of range" in got[4] and "empty" in got[5]
    assert "out of range" in got[7] and "duplicate id" in got[8]


def test_generic_csv_semicolon_and_missing_column(tmp_path):
    p = tmp_path / "kb.csv"
    p.write_text("question;option_a;option_b;answer\nQ?;x;y;B\n", encoding="utf-8")
    rep = ds.load("generic", p)
    assert rep.items[0].answer == 1 and rep.items[0].id.startswith("generic-")
    q = write_csv(tmp_path / "noans.csv", ["id", "question", "option_a", "option_b"], [["1", "Q", "x", "y"]])
    with pytest.raises(DatasetError, match=r"noans\.csv.*answer"):
        ds.load("generic", q)


def test_csv_ragged_rows(tmp_path):
    p = tmp_path / "kb.csv"
    p.write_text("id,question,option_a,option_b,answer\n1,Q,x,y,A\n2,Q, with comma,x,y,A\n3,Q\n", encoding="utf-8")
    rep = ds.load("generic", p)
    assert [it.id for it in rep.items] == ["1"]
    assert [s.row for s in rep.skipped] == [3, 4]
    assert "unquoted delimiter" in rep.skipped[0].reason


def test_latin1_file(tmp_path):
    p = write_csv(
        tmp_path / "l1.csv",
        ["id", "question", "option_a", "option_b", "answer"],
        [["1", "Quelle est la thérapie pour l'œdème?", "Diurétique", "Café", "A"]],
        encoding="cp1252",
    )
    rep = ds.load("generic", p)
    it = rep.items[0]
    assert it.question == "Quelle est la thérapie pour l'œdème?"
    assert it.options == ("Diurétique", "Café")
    assert rep.encoding == "cp1252"
    q = tmp_path / "raw.jsonl"
    q.write_bytes(
        b'{"id": "1", "question": "caf\xe9 \x81?", "options": ["a", "b"], "answer": 0}\n'
        + '{"id": "2", "question": "ok é", "options": ["a", "b"], "answer": 1}\n'.encode()
    )
    rep = ds.load("generic", q)
    assert [it.question for it in rep.items] == ["caf\xe9 \x81?", "ok é"]
    assert rep.encoding == "mixed"


def test_demo_kind(tmp_path, monkeypatch):
    p = write_jsonl(
        tmp_path / "demo.jsonl",
        [{"id": "d1", "question": "Q?", "options": ["x", "y"], "answer": 0, "concept_id": "c1"}],
    )
    rep = ds.load("demo", p)
    assert rep.items[0].source == "demo" and rep.items[0].labels == {"concept_id": "c1"}
    monkeypatch.setattr(ds.paths, "DEMO_KB", p)
    assert ds.load_items("demo")[0].id == "d1"
    assert ds.load_spec("demo").kind == "demo"


# --------------------------------------------------------------------------------------------
# File-level errors and specs
# --------------------------------------------------------------------------------------------


def test_missing_file_names_path(tmp_path):
    missing = tmp_path / "nope" / "dev.jsonl"
    for kind in ("medmcqa", "mhqa", "generic"):
        with pytest.raises(DatasetError, match="not found") as exc:
            ds.load(kind, missing)
        assert str(missing) in str(exc.value)


def test_unknown_kind_and_no_usable_rows(tmp_path):
    p = write_jsonl(tmp_path / "bad.jsonl", ["{oops", {"question": "", "options": ["x", "y"], "answer": 0}])
    with pytest.raises(DatasetError, match="unknown dataset kind"):
        ds.load("pubmedqa", p)
    with pytest.raises(DatasetError, match=r"bad\.jsonl.*no usable rows.*2 skipped"):
        ds.load("generic", p)
    # A bad first line in JSONL is a skipped row, not a file error.
    q = write_jsonl(tmp_path / "first.jsonl", ["{oops", {"question": "Q", "options": ["x", "y"], "answer": 0}])
    rep = ds.load("generic", q)
    assert len(rep.items) == 1 and rep.skipped[0].row == 1
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DatasetError, match="empty"):
        ds.load("generic", empty)
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"id": 1,\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"broken\.json.*invalid JSON"):
        ds.load("medmcqa", broken)


def test_parse_dataset_spec(tmp_path):
    assert ds.parse_dataset_spec("medmcqa:/x/dev.jsonl") == ("medmcqa", Path("/x/dev.jsonl"))
    assert ds.parse_dataset_spec("MHQA_B: data/b.csv") == ("mhqa_b", Path("data/b.csv"))
    assert ds.parse_dataset_spec("generic:C:\\data\\kb.csv")[1] == Path("C:\\data\\kb.csv")
    assert ds.parse_dataset_spec("demo")[0] == "demo"
    for bad in ("", "medmcqa", "medmcqa:", "foo:bar.csv", "/x/dev.jsonl"):
        with pytest.raises(DatasetError):
            ds.parse_dataset_spec(bad)
    p = write_jsonl(tmp_path / "g.jsonl", [{"question": "Q?", "options": ["x", "y"], "answer": 1}])
    assert ds.load_spec(f"generic:{p}").items[0].answer == 1
