"""ICD-10-CM import (simple-icd-10-cm shipped data, no network) as a four-level hierarchy."""

from __future__ import annotations

import pytest

from hdsu_core.hierarchy import Hierarchy, HierarchyError, validate_data

icd10 = pytest.importorskip("hdsu_core.icd10")


@pytest.fixture(scope="module")
def anxiety_block() -> Hierarchy:
    return icd10.import_branch("F40-F48")


def assert_tree_shape(h: Hierarchy) -> None:
    assert validate_data(h.to_dict()) == []
    for con in h.concepts():
        if con.parent is None:
            assert con.level == 1
        else:
            assert h.concept(con.parent).level == con.level - 1
        assert con.codes.get("icd10cm")
        assert con.id == "icd10cm." + con.codes["icd10cm"].lower()
        assert con.terms and con.name


def test_block_import_is_four_levels(anxiety_block):
    h = anxiety_block
    assert_tree_shape(h)
    counts = h.level_counts()
    assert counts[1] == 1 and counts[2] == 1
    assert counts[3] >= 5 and counts[4] >= counts[3]
    assert h.roots() == ["icd10cm.5"]
    assert h.children("icd10cm.5") == ["icd10cm.f40-f48"]
    cats = h.children("icd10cm.f40-f48")
    assert "icd10cm.f41" in cats and "icd10cm.f43" in cats
    assert all(h.concept(c).level == 3 for c in cats)


def test_gad_is_level_four(anxiety_block):
    h = anxiety_block
    gad = h.concept("icd10cm.f41.1")
    assert gad.level == 4
    assert gad.codes == {"icd10cm": "F41.1"}
    assert h.ancestors("icd10cm.f41.1") == ["icd10cm.f41", "icd10cm.f40-f48", "icd10cm.5"]
    assert "generalized anxiety disorder" in gad.terms
    assert "Generalized anxiety disorder" in gad.name
    assert len(gad.terms) == len({t.lower() for t in gad.terms})  # no duplicate terms


def test_deeper_codes_fold_into_level_four(anxiety_block):
    # F43.10/F43.11/F43.12 sit below F43.1 in ICD-10-CM; here they are terms, not concepts
    h = anxiety_block
    assert "icd10cm.f43.1" in h and "icd10cm.f43.11" not in h
    assert h.concept("icd10cm.f43.1").level == 4
    assert len(h.concept("icd10cm.f43.1").terms) > 2


def test_block_import_round_trip(anxiety_block, tmp_path):
    out = tmp_path / "f40.json"
    anxiety_block.save(out)
    back = Hierarchy.load(out)
    assert back.to_dict() == anxiety_block.to_dict()
    assert back.name == "ICD-10-CM F40-F48"


def test_lowercase_and_spaces_accepted():
    assert icd10.resolve(" f40-f48 ") == "F40-F48"


def test_chapter_import():
    h = icd10.import_branch("5")
    assert_tree_shape(h)
    counts = h.level_counts()
    assert counts[1] == 1 and counts[2] > 1 and counts[3] > counts[2] and counts[4] > counts[3]
    assert "icd10cm.f40-f48" in h and "icd10cm.f41.1" in h
    assert h.concept("icd10cm.f41.1").level == 4


def test_category_import():
    h = icd10.import_branch("F41")
    assert_tree_shape(h)
    assert h.level_counts()[3] == 1
    assert h.children("icd10cm.f41") and "icd10cm.f41.1" in h


@pytest.mark.parametrize("bad", ["XYZ", "", "F99-F100", "F41.1"])
def test_bad_code(bad):
    with pytest.raises(HierarchyError):
        icd10.import_branch(bad)
