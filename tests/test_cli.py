"""``python -m hdsu_core`` hierarchy and data commands, run as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HIERARCHY = "data/hierarchy.json"


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("HDSU_HOME", str(REPO / "var"))
    return env


def run(*args, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hdsu_core", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


def run_many(arg_lists, timeout: int = 120) -> list[subprocess.CompletedProcess]:
    """Run independent commands concurrently (keeps the suite fast); results in input order."""
    procs = [
        (
            args,
            subprocess.Popen(
                [sys.executable, "-m", "hdsu_core", *map(str, args)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=_env(),
            ),
        )
        for args in arg_lists
    ]
    out = []
    for args, p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(args, p.returncode, stdout, stderr))
    return out


# A document with one violation of every kind (same shape as in test_hierarchy.py).
def _c(cid, level, parent=None, name=None, **extra):
    return {"id": cid, "name": cid.upper() if name is None else name, "level": level, "parent": parent, **extra}


BAD_DOC = {
    "format": "hdsu-hierarchy/1",
    "name": "bad",
    "concepts": [
        _c("root", 1),
        _c("dom", 2, "root"),
        _c("dom2", 2, "root"),
        _c("spec", 3, "dom"),
        _c("spec", 3, "dom", name="again"),
        _c("skipper", 4, "dom"),
        _c("lost", 3, "ghost"),
        _c("floating", 2),
        _c("noname", 3, "dom", name=""),
        _c("dupterm", 3, "dom", terms=["Heart", "heart"]),
        {"id": "twoparents", "name": "T", "level": 3, "parents": ["dom", "dom2"]},
        _c("cy1", 3, "cy2"),
        _c("cy2", 4, "cy1"),
        _c("deep", 5, "spec"),
        _c("Bad ID", 3, "dom"),
        _c("badm", 3, "dom", matchers=[{"source": "medmcqa", "field": "subject_name"}]),
    ],
}
BAD_LINES = {
    "duplicate_id: [spec]",
    "level_skip: [skipper,dom]",
    "orphan: [lost,ghost]",
    "orphan: [floating]",
    "missing_name: [noname]",
    "duplicate_term: [dupterm]",
    "multiple_parents: [twoparents,dom,dom2]",
    "cycle: [cy1,cy2]",
    "level_skip: [cy1,cy2]",
    "bad_level: [deep]",
    "bad_id: [Bad ID]",
    "bad_matcher: [badm]",
}


def assert_clean_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


# --------------------------------------------------------------------------------------------
# hierarchy
# --------------------------------------------------------------------------------------------


def test_validate_default():
    r = run("hierarchy", "validate", HIERARCHY)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == ""
    assert "valid" in r.stderr


def test_validate_bad_file_one_line_per_violation(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(BAD_DOC), encoding="utf-8")
    r = run("hierarchy", "validate", bad)
    assert r.returncode == 1
    lines = r.stdout.strip().splitlines()
    assert len(lines) == len(BAD_LINES)
    assert {line.split("]")[0] + "]" for line in lines} == BAD_LINES
    assert "Traceback" not in r.stderr


def test_validate_not_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope", encoding="utf-8")
    r = run("hierarchy", "validate", bad)
    assert r.returncode == 1
    assert r.stdout.startswith("bad_format")
    assert "Traceback" not in r.stderr


def test_show_json():
    r = run("hierarchy", "show", HIERARCHY, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["concepts"] >= 150
    assert set(info["levels"]) == {"1", "2", "3", "4"}
    assert all(v > 0 for v in info["levels"].values())
    assert sum(info["levels"].values()) == info["concepts"]
    assert "clinical_sciences" in info["roots"]


def test_show_text_depth():
    r = run("hierarchy", "show", HIERARCHY, "--depth", "2")
    assert r.returncode == 0, r.stderr
    assert "L2 surgical_specialties" in r.stdout
    assert "L3 " not in r.stdout and "L4 " not in r.stdout


def test_import_icd10cm_then_validate(tmp_path):
    out = tmp_path / "icd" / "f40.json"
    bad_out = tmp_path / "x.json"
    r, bad = run_many(
        [
            ["hierarchy", "import-icd10cm", "F40-F48", "--out", out],
            ["hierarchy", "import-icd10cm", "XYZ", "--out", bad_out],
        ]
    )
    # a bad code: one clean error line, nothing written
    assert_clean_error(bad, "XYZ")
    assert not bad_out.exists()
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["levels"]["1"] == 1 and info["levels"]["2"] == 1 and info["levels"]["4"] > 0
    assert out.is_file()
    assert [p.name for p in out.parent.iterdir()] == ["f40.json"]
    r = run("hierarchy", "validate", out)
    assert r.returncode == 0, r.stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    assert any(c["id"] == "icd10cm.f41.1" and c["level"] == 4 for c in data["concepts"])


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def test_data_load_medmcqa(medmcqa_dev):
    r = run("data", "load", "medmcqa", medmcqa_dev, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["items"] == 2957
    assert info["sources"] == {"medmcqa": 2957}


def test_data_load_mhqa(mhqa_gold):
    r = run("data", "load", "mhqa", mhqa_gold, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert 1700 <= info["items"] <= 1758
    assert info["items"] + info["skipped"] == 1758
    assert len(info["skipped_rows"]) == info["skipped"]


def test_data_load_mhqa_b(mhqa_b):
    r = run("data", "load", "mhqa_b", mhqa_b, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["items"] + info["skipped"] == 4981
    assert info["sources"] == {"mhqa_b": info["items"]}


def test_data_load_text_output(tmp_path):
    f = tmp_path / "g.jsonl"
    f.write_text(
        json.dumps({"question": "Q?", "options": ["a", "b"], "answer": 0}) + "\n" + "not json\n", encoding="utf-8"
    )
    r = run("data", "load", "generic", f)
    assert r.returncode == 0, r.stderr
    assert "1 items, 1 skipped" in r.stdout
    assert ":2:" in r.stdout  # the skipped row, with its line number


def test_data_split_forget_surgery(medmcqa_dev):
    r = run(
        "data",
        "split",
        "--hierarchy",
        HIERARCHY,
        "--dataset",
        f"medmcqa:{medmcqa_dev}",
        "--forget",
        "surgery",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["forget"] == 254  # every Surgery item is on the forget side
    assert info["forget_trained"] + info["forget_holdout"] == 254
    assert info["forget"] + info["retain"] == 2957
    assert info["holdout"] == info["forget_holdout"] + info["retain_holdout"]
    assert info["selected"] == ["surgery"]
    per = info["per_concept"]
    assert sum(v["forget"] for v in per.values()) == info["forget_trained"]


def test_data_split_two_datasets(medmcqa_dev, mhqa_gold):
    r = run(
        "data",
        "split",
        "--dataset",
        f"medmcqa:{medmcqa_dev}",
        "--dataset",
        f"mhqa:{mhqa_gold}",
        "--forget",
        "anxiety,surgery",
        "--seed",
        "3",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("forget ")
    assert "surgery:" in r.stdout and "anxiety:" in r.stdout


# --------------------------------------------------------------------------------------------
# errors: exit != 0, one line on stderr, no traceback
# --------------------------------------------------------------------------------------------


def test_usage_errors():
    cases = [
        (["hierarchy", "validate", HIERARCHY, "--bogus"], "--bogus"),
        (["hierarchy", "show", "--nope"], "--nope"),
        (["data", "load", "medmcqa", "x.jsonl", "--frobnicate"], "--frobnicate"),
        (["data", "split", "--forget", "surgery"], "--dataset"),
        (["frobnicate"], "frobnicate"),
        ([], "required"),
    ]
    for (args, needle), r in zip(cases, run_many([a for a, _ in cases])):
        assert r.returncode == 2, args
        assert_clean_error(r, needle)


def test_missing_files(tmp_path):
    missing = tmp_path / "missing.json"
    cases = [
        ["hierarchy", "validate", missing],
        ["hierarchy", "show", missing],
        ["data", "load", "medmcqa", tmp_path / "missing.jsonl"],
        ["data", "split", "--hierarchy", missing, "--dataset", "demo", "--forget", "surgery"],
        ["data", "split", "--dataset", f"medmcqa:{tmp_path / 'missing.jsonl'}", "--forget", "surgery"],
    ]
    for args, r in zip(cases, run_many(cases)):
        assert r.returncode == 1, args
        assert_clean_error(r, "missing")


def test_directory_instead_of_file(tmp_path):
    cases = [
        ["hierarchy", "validate", tmp_path],
        ["hierarchy", "show", tmp_path],
        ["data", "load", "medmcqa", tmp_path],
    ]
    for r in run_many(cases):
        assert_clean_error(r)


def test_bad_kind(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text("{}\n", encoding="utf-8")
    a, b = run_many([["data", "load", "bogus", f], ["data", "split", "--dataset", f"bogus:{f}", "--forget", "surgery"]])
    assert_clean_error(a, "bogus")
    assert_clean_error(b, "bogus")


def test_unknown_concept(medmcqa_dev):
    r = run("data", "split", "--dataset", f"medmcqa:{medmcqa_dev}", "--forget", "surgery,no_such_thing")
    assert r.returncode == 1
    assert_clean_error(r, "no_such_thing")


def test_unknown_method_setting_is_refused(tmp_path):
    r = run("run", "--db", tmp_path / "x.duckdb", "--set", "step_nrom=5", "--json")
    assert r.returncode == 1
    assert_clean_error(r, "step_nrom")
    assert "step_norm" in r.stderr  # the known settings are listed


def test_empty_selection(tmp_path):
    f = tmp_path / "g.jsonl"
    f.write_text(json.dumps({"question": "Q?", "options": ["a", "b"], "answer": 0}) + "\n", encoding="utf-8")
    assert_clean_error(run("data", "split", "--dataset", f"generic:{f}", "--forget", ","), "no concepts")


def test_invalid_hierarchy_for_split(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(BAD_DOC), encoding="utf-8")
    f = tmp_path / "g.jsonl"
    f.write_text(json.dumps({"question": "Q?", "options": ["a", "b"], "answer": 0}) + "\n", encoding="utf-8")
    assert_clean_error(run("data", "split", "--hierarchy", bad, "--dataset", f"generic:{f}", "--forget", "root"))


def test_bench_summary_over_seeds_counts_targets():
    """The multi-seed bench summary judges each run against the retrain reference of its own seed
    and counts the targets met; a run without a reference leaves the forget target unjudged."""
    from hdsu_core.bench import format_summary, summarise_seeds, target_checks

    def row(seed, method, f, r, mia, changed, sec):
        return {
            "dataset": "demo",
            "seed": seed,
            "method": method,
            "forget_acc_after": f,
            "retain_acc_before": 1.0,
            "retain_acc_after": r,
            "mia_auc": mia,
            "changed_fraction": changed,
            "seconds": sec,
        }

    rows = [
        row(0, "retrain", 0.00, 1.0, 0.52, 1.0, 3.0),
        row(1, "retrain", 0.08, 1.0, 0.48, 1.0, 3.0),
        row(0, "hdsu", 0.05, 0.985, 0.417, 0.001, 13.0),  # forget +5 pts ok, retain -1.5 ok, mia no
        row(1, "hdsu", 0.15, 0.97, 0.51, 0.001, 43.0),  # forget +7 pts no, retain -3 no, mia ok, slow
        row(2, "hdsu", 0.00, 1.0, 0.50, 0.002, 10.0),
    ]  # no reference for seed 2, mask too big
    summary = {s["method"]: s for s in summarise_seeds(rows)}
    h = summary["hdsu"]
    assert h["runs"] == 3 and h["seeds"] == [0, 1, 2] and h["seed"] == "all"
    assert h["targets"] == {"forget": "1/2", "retain": "2/3", "mia": "2/3", "changed": "2/3", "time": "2/3"}
    assert abs(h["forget_acc_after"] - 0.2 / 3) < 1e-9
    assert target_checks(rows[2], None)["forget"] is None
    text = format_summary(list(summary.values()))
    assert "hdsu" in text and "1/2" in text and "retrain" in text


def test_bench_rejects_bad_seeds(capsys):
    from hdsu_core.cli import main

    assert main(["bench", "--seeds", "0,x", "--methods", "hdsu", "--quiet"]) != 0
    assert "--seeds takes comma-separated integers" in capsys.readouterr().err
