"""Audit reports: context, HTML, PDF, determinism, unfinished / unknown runs, audit logging, CLI."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import subprocess
import sys
import zlib

import pytest
from markupsafe import escape

from hdsu_core import audit, cli_audit
from hdsu_core.cli_common import Parser
from hdsu_core.hierarchy import load_default
from hdsu_core.store import Store

RUN = "r20240501-101500-a1b2c3"
NOW = dt.datetime(2024, 5, 2, 9, 30, 0, tzinfo=dt.timezone.utc)

FORGET_CONCEPTS = ["generalized_anxiety_disorder", "panic_disorder"]
RETAIN_CONCEPTS = ["appendicitis", "major_depressive_disorder", "type_2_diabetes", "asthma"]


# ---------------------------------------------------------------------------------------------
# PDF text extraction without third-party tools
# ---------------------------------------------------------------------------------------------
def _pdf_streams(pdf: bytes) -> list[bytes]:
    """Every stream body, Flate-decoded where possible (content streams, CMaps, object streams)."""
    out = []
    for m in re.finditer(rb"(?<!end)stream\r?\n", pdf):
        start = m.end()
        end = pdf.find(b"endstream", start)
        raw = pdf[start:end]
        try:
            out.append(zlib.decompressobj().decompress(raw))
        except zlib.error:
            out.append(raw)
    return out


def _parse_cmap(data: bytes) -> tuple[int, dict[int, str]]:
    """(code width in bytes, code -> text) of a ToUnicode CMap."""
    text = data.decode("latin-1")
    width = 2
    m = re.search(r"begincodespacerange\s*<([0-9a-fA-F]+)>", text)
    if m:
        width = len(m.group(1)) // 2

    def u16(h: str) -> str:
        return bytes.fromhex(h).decode("utf-16-be", errors="replace")

    mapping: dict[int, str] = {}
    for block in re.findall(r"beginbfchar(.*?)endbfchar", text, re.S):
        for src, dst in re.findall(r"<([0-9a-fA-F]+)>\s*<([0-9a-fA-F]*)>", block):
            mapping[int(src, 16)] = u16(dst)
    for block in re.findall(r"beginbfrange(.*?)endbfrange", text, re.S):
        for lo, hi, rest in re.findall(r"<([0-9a-fA-F]+)>\s*<([0-9a-fA-F]+)>\s*(\[[^\]]*\]|<[0-9a-fA-F]*>)", block):
            lo_i, hi_i = int(lo, 16), int(hi, 16)
            if rest.startswith("["):
                for k, dst in enumerate(re.findall(r"<([0-9a-fA-F]*)>", rest)):
                    mapping[lo_i + k] = u16(dst)
            else:
                base = bytes.fromhex(rest[1:-1])
                for k in range(hi_i - lo_i + 1):
                    val = int.from_bytes(base, "big") + k
                    mapping[lo_i + k] = val.to_bytes(len(base), "big").decode("utf-16-be", errors="replace")
    return width, mapping


def pdf_text_runs(pdf: bytes) -> list[str]:
    """Text runs of a PDF (WeasyPrint writes glyph ids as hex strings in TJ/Tj operators, with a
    ToUnicode CMap per font). Fonts are not resolved: each run is decoded with every CMap, so the
    result holds the real text (with the matching CMap) plus noise (with the others)."""
    streams = _pdf_streams(pdf)
    cmaps = [_parse_cmap(s) for s in streams if b"begincmap" in s]
    contents = [s for s in streams if b"TJ" in s or b"Tj" in s]
    runs: list[list[str]] = []
    for c in contents:
        text = c.decode("latin-1")
        for m in re.finditer(r"\[(.*?)\]\s*TJ|<([0-9a-fA-F]*)>\s*Tj", text, re.S):
            hexes = re.findall(r"<([0-9a-fA-F]*)>", m.group(1)) if m.group(1) is not None else [m.group(2)]
            runs.append(hexes)
    out = []
    for width, mapping in cmaps:
        for hexes in runs:
            data = bytes.fromhex("".join(hexes))
            chars = []
            for i in range(0, len(data) - width + 1, width):
                chars.append(mapping.get(int.from_bytes(data[i : i + width], "big"), "\ufffd"))
            out.append("".join(chars))
    return out


def pdf_text_contains(pdf: bytes, needle: str) -> bool:
    squeeze = needle.replace(" ", "")
    return any(needle in r or squeeze in r.replace(" ", "") for r in pdf_text_runs(pdf))


def pdf_info_contains(pdf: bytes, needle: str) -> bool:
    """Whether a document-info string (e.g. /Title) holds ``needle`` (plain or UTF-16BE hex)."""
    blobs = [pdf, *_pdf_streams(pdf)]
    plain = needle.encode("latin-1", errors="ignore")
    u16 = needle.encode("utf-16-be").hex()
    for b in blobs:
        for m in re.finditer(rb"/Title\s*(\((?:\\.|[^\\)])*\)|<[0-9a-fA-F]*>)", b):
            v = m.group(1)
            if v.startswith(b"(") and plain in v:
                return True
            if v.startswith(b"<") and u16 in v.decode("ascii").lower():
                return True
    return False


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------
def _probe_rows(phase: str) -> list[dict]:
    """A few dozen rows: forget items fall from mostly right to mostly wrong; retain items stay."""
    rows = []
    for ci, cid in enumerate(FORGET_CONCEPTS):
        for k in range(8):
            item = f"demo-{cid[:5]}-{k:02d}"
            before_ok = k != 7
            after_ok = k in (0,) if ci == 0 else k in (0, 1)
            ok = before_ok if phase == "before" else after_ok
            rows.append(
                {
                    "item_id": item,
                    "split": "forget",
                    "concept_id": cid,
                    "correct": ok,
                    "pred": 1 if ok else 2,
                    "answer": 1,
                    "loss": (0.2 + 0.01 * k) if phase == "before" else (1.6 + 0.05 * k),
                    "mink": -0.5 - 0.01 * k,
                    "answer_logprob": -0.3,
                    "option_logprobs": [-2.0, -0.3, -1.5, -3.0],
                }
            )
    for ci, cid in enumerate(RETAIN_CONCEPTS):
        for k in range(6):
            item = f"demo-{cid[:5]}-r{k:02d}"
            ok = k != 5 if not (phase == "after" and ci == 0 and k == 4) else False
            rows.append(
                {
                    "item_id": item,
                    "split": "retain",
                    "concept_id": cid,
                    "correct": ok,
                    "pred": 0 if ok else 3,
                    "answer": 0,
                    "loss": 0.25 + 0.02 * k,
                    "mink": -0.4,
                    "option_logprobs": [-0.2, -2.0, -2.5, -3.0],
                }
            )
    for k in range(10):
        cid = FORGET_CONCEPTS[k % 2] if k < 4 else RETAIN_CONCEPTS[k % 4]
        rows.append(
            {
                "item_id": f"demo-hold-{k:02d}",
                "split": "holdout",
                "concept_id": cid,
                "correct": k % 3 == 0,
                "pred": 0,
                "answer": 0 if k % 3 == 0 else 1,
                "loss": 1.4 + 0.07 * k,
                "mink": -1.2,
                "option_logprobs": [-1.0, -1.2, -1.5, -1.6],
            }
        )
    rows.append(
        {
            "item_id": "demo-odd-00",
            "split": "retain",
            "concept_id": "no_such_concept",
            "correct": True,
            "pred": 0,
            "answer": 0,
            "loss": 0.3,
            "mink": -0.4,
        }
    )
    return rows


METRICS = {
    "forget_acc_before": 0.875,
    "forget_acc_after": 0.1875,
    "retain_acc_before": 0.84,
    "retain_acc_after": 0.82,
    "holdout_acc_before": 0.4,
    "holdout_acc_after": 0.4,
    "holdout_forget_acc_after": 0.25,
    "mia_auc_before": 0.97,
    "mia_auc": 0.512,
    "mia_auc_mink": 0.488,
    "mia_auc_ci_low": 0.41,
    "mia_auc_ci_high": 0.62,
    "mia_auc_mink_before": 0.9,
    "mia_resistance": 0.976,
    "forgetting_rate": 0.8125,
    "knowledge_preservation": 0.82,
    "retain_change_points": -2.0 + 0.0,
    "changed_fraction": 0.000421,
    "changed_weights": 4210.0,
    "total_weights": 10_000_000.0,
    "ppl_before": 12.5,
    "ppl_after": 12.9,
    "seconds": 42.0,
    "n_forget": 16,
    "n_retain": 25,
    "n_holdout": 10,
    "steps": 12,
}


def _seed(store: Store, run_id: str = RUN, *, finish: bool = True) -> None:
    store.create_run(
        run_id,
        author="alice",
        method="hdsu",
        model="demo",
        dataset="demo",
        forget_concepts=["anxiety", "appendicitis_typo"],
        config={"method": "hdsu", "settings": {"lr": 0.001, "steps": 12}, "seed": 0},
        config_hash="cfg123abc",
        model_hash="mdl456def",
    )
    store.log_event("alice", "create_run", run_id, {"method": "hdsu"})
    store.set_status(run_id, "running")
    if not finish:
        store.write_probe_results(run_id, "before", _probe_rows("before"))
        return
    store.write_probe_results(run_id, "before", _probe_rows("before"))
    store.write_probe_results(run_id, "after", _probe_rows("after"))
    store.write_metrics(run_id, METRICS)
    store.update_run(
        run_id,
        summary={
            "info": {
                "stopped": "reached_target",
                "steps": 12,
                "mask_size": 10000,
                "mask_fraction": 0.001,
                "repair_damaged_before": 3,
                "repair_damaged_after": 1,
                "repair_steps": 4,
                "repair_reverted": True,
            }
        },
    )
    store.write_generations(
        run_id,
        "before",
        [
            {
                "prompt_id": "forget:demo-gener-00",
                "prompt": "First-line drug for GAD?",
                "output": "An SSRI such as sertraline.",
            },
            {
                "prompt_id": "retain:demo-appen-r00",
                "prompt": "Classic sign of appendicitis?",
                "output": "McBurney point <tenderness>.",
            },
        ],
    )
    store.write_generations(
        run_id,
        "after",
        [
            {"prompt_id": "forget:demo-gener-00", "prompt": "First-line drug for GAD?", "output": "I am not sure."},
            {
                "prompt_id": "retain:demo-appen-r00",
                "prompt": "Classic sign of appendicitis?",
                "output": "McBurney point <tenderness>.",
            },
        ],
    )
    store.set_status(run_id, "done")
    store.log_event("alice", "run_done", run_id, {"seconds": 42})


@pytest.fixture()
def store(tmp_path) -> Store:
    s = Store(tmp_path / "t.duckdb")
    _seed(s)
    return s


@pytest.fixture(scope="module")
def hierarchy():
    return load_default()


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------
def test_context_contents(store, hierarchy):
    ctx = audit.report_context(store, RUN, hierarchy, now=NOW)
    assert ctx["run_id"] == RUN and ctx["finished"] and ctx["banner"] is None
    assert ctx["run"]["author"] == "alice" and ctx["run"]["model_hash"] == "mdl456def"
    sel = {c["id"]: c for c in ctx["selected"]}
    assert sel["anxiety"]["path"] == hierarchy.path_str("anxiety")
    assert not sel["appendicitis_typo"]["known"] and "unknown" in sel["appendicitis_typo"]["path"]
    assert ctx["counts"] == {"forget": 16, "retain": 25, "holdout": 10}
    groups = {r["concept_id"]: r["group"] for r in ctx["collateral"]["concept"]}
    assert groups["generalized_anxiety_disorder"] == "targeted"
    assert groups["appendicitis"] == "preserved"
    gad = next(r for r in ctx["collateral"]["concept"] if r["concept_id"] == "generalized_anxiety_disorder")
    assert gad["acc_before"] == pytest.approx(7 / 8) and gad["acc_after"] == pytest.approx(1 / 8)
    # roll-ups go through the hierarchy's ancestors
    l3 = {(r["concept_id"], r["group"]) for r in ctx["collateral"]["l3"]}
    assert ("anxiety", "targeted") in l3 if hierarchy.concept("anxiety").level == 3 else True
    l2_ids = {r["concept_id"] for r in ctx["collateral"]["l2"]}
    for cid in ("generalized_anxiety_disorder", "appendicitis"):
        l2 = next(a for a in [cid, *hierarchy.ancestors(cid)] if hierarchy.concept(a).level == 2)
        assert l2 in l2_ids
    assert "no_such_concept" in {r["concept_id"] for r in ctx["collateral"]["concept"]}
    assert len(ctx["examples"]["forget"]) == audit.N_EXAMPLE_PROBES
    assert ctx["examples"]["forget"][0]["concept_path"].endswith(hierarchy.concept("generalized_anxiety_disorder").name)
    assert [g["prompt_id"] for g in ctx["generations"]] == ["forget:demo-gener-00", "retain:demo-appen-r00"]
    assert [e["action"] for e in ctx["events"]] == ["create_run", "run_done"]
    assert re.fullmatch(r"[0-9a-f]{64}", ctx["sha256"]) and ctx["report_id"] == f"AR-{ctx['sha256'][:16]}"
    assert ctx["sha256"] == audit.content_sha256(ctx)
    v = {c["name"]: c["status"] for c in ctx["verdict"]["checks"]}
    assert v == {
        "Forgetting": "pass",
        "Retained knowledge": "pass",
        "Membership privacy": "pass",
        "Minimal edit": "pass",
    }
    privacy = next(c for c in ctx["verdict"]["checks"] if c["name"] == "Membership privacy")
    assert privacy["value"] == "0.512 (95 % interval 0.41–0.62)"


def test_html_report(store, hierarchy):
    html = audit.build_html(store, RUN, hierarchy, now=NOW)
    assert html.startswith("<!DOCTYPE html>")
    assert RUN in html
    assert f"<title>HDSU Studio audit report — run {RUN}</title>" in html
    assert "2024-05-02 09:30:00 UTC" in html
    # selected concept with its full path (autoescaped text of the path)
    assert str(escape(hierarchy.path_str("anxiety"))) in html
    assert str(escape(hierarchy.path_str("generalized_anxiety_disorder"))) in html
    assert "unknown concept id &#39;appendicitis_typo&#39;" in html
    # metric values and explanations
    for text in (
        "0.875 (87.5 %)",
        "0.188 (18.8 %)",
        "0.512",
        "0.000421 (0.0421 %)",
        "4,210",
        "-2.00 pts",
        "FR = 1 − forget accuracy after",
        "cannot tell forgotten items",
    ):
        assert text in html, text
    # three inline SVG charts, no external resources
    assert html.count("<svg") == 3
    assert "<?xml" not in html and "http://" not in html.split("<body>")[1].replace("http://www.w3.org", "")
    # autoescaping of stored text (model output)
    assert "McBurney point &lt;tenderness&gt;." in html
    assert "Verdict: PASS" in html
    ctx = audit.report_context(store, RUN, hierarchy, now=NOW)
    assert ctx["sha256"] in html and ctx["report_id"] in html


def test_html_deterministic(store, hierarchy):
    head = re.compile(r'<span class="mono" id="audit-chain-head">[^<]*</span>')
    a = audit.build_html(store, RUN, hierarchy, now=NOW)
    b = audit.build_html(store, RUN, hierarchy, now=NOW)  # after a logged export: same content
    assert a != b, "the second report pins a newer audit log head (the first export was logged)"
    assert head.sub("", a) == head.sub("", b)
    c = audit.build_html(store, RUN, hierarchy, now=NOW + dt.timedelta(hours=1))
    assert head.sub("", c) != head.sub("", a)
    assert head.sub("", c.replace("2024-05-02 10:30:00 UTC", "2024-05-02 09:30:00 UTC")) == head.sub("", a)
    # charts alone are deterministic too
    s1 = audit.report_context(store, RUN, hierarchy, now=NOW)["charts"]
    s2 = audit.report_context(store, RUN, hierarchy, now=NOW)["charts"]
    assert s1 == s2 and all(s1.values())


def test_content_hash_tracks_content(store, hierarchy):
    h1 = audit.report_context(store, RUN, hierarchy, now=NOW)["sha256"]
    store.write_metrics(RUN, {"mia_auc": 0.7})
    ctx = audit.report_context(store, RUN, hierarchy, now=NOW)
    assert ctx["sha256"] != h1
    assert {c["name"]: c["status"] for c in ctx["verdict"]["checks"]}["Membership privacy"] == "fail"
    assert ctx["verdict"]["overall"] == "fail"


def test_pdf_report(store, hierarchy):
    pdf = audit.build_pdf(store, RUN, hierarchy, now=NOW)
    assert pdf.startswith(b"%PDF")
    assert pdf_text_contains(pdf, RUN)
    assert pdf_text_contains(pdf, "HDSU Studio audit report")
    assert not pdf_text_contains(pdf, "r19990101-000000-zzzzzz")  # the helper is not vacuous
    assert pdf_info_contains(pdf, RUN)


def test_unfinished_run_has_banner(tmp_path, hierarchy):
    s = Store(tmp_path / "t.duckdb")
    _seed(s, "r-unfinished", finish=False)
    ctx = audit.report_context(s, "r-unfinished", hierarchy, now=NOW)
    assert not ctx["finished"] and ctx["verdict"]["overall"] == "incomplete"
    html = audit.build_html(s, "r-unfinished", hierarchy, now=NOW)
    assert "Run not finished (status running)" in html
    assert "r-unfinished" in html
    # a queued run with nothing at all still renders (PDF too)
    s.create_run(
        "r-queued",
        author="bob",
        method="npo",
        model="demo",
        dataset="demo",
        forget_concepts=["panic_disorder"],
        config={},
    )
    html = audit.build_html(s, "r-queued", hierarchy, now=NOW)
    assert "Run not finished (status queued)" in html and "No metrics have been recorded" in html
    pdf = audit.build_pdf(s, "r-queued", hierarchy, now=NOW)
    assert pdf.startswith(b"%PDF") and pdf_text_contains(pdf, "r-queued")


def test_failed_run_banner_shows_error(tmp_path, hierarchy):
    s = Store(tmp_path / "t.duckdb")
    s.create_run(
        "r-failed",
        author="bob",
        method="npo",
        model="demo",
        dataset="demo",
        forget_concepts=["panic_disorder"],
        config={},
    )
    s.set_status("r-failed", "failed", error="CUDA out of memory\ntraceback...")
    html = audit.build_html(s, "r-failed", hierarchy, now=NOW)
    assert "Run not finished (status failed): CUDA out of memory" in html


def test_unknown_run_raises(store, hierarchy):
    with pytest.raises(ValueError, match="unknown run nope"):
        audit.report_context(store, "nope", hierarchy)
    with pytest.raises(ValueError, match="unknown run nope"):
        audit.build_html(store, "nope", hierarchy)
    with pytest.raises(ValueError, match="unknown run nope"):
        audit.build_pdf(store, "nope", hierarchy)
    assert store.audit_events("nope").empty


def test_export_logs_audit_event(store, hierarchy):
    ctx = audit.report_context(store, RUN, hierarchy, now=NOW)
    audit.build_html(store, RUN, hierarchy, actor="carol", now=NOW)
    audit.build_pdf(store, RUN, hierarchy, now=NOW)
    ev = store.audit_events(RUN)
    exports = ev[ev["action"] == "export_report"].sort_values("event_id")
    assert list(exports["actor"]) == ["carol", "system"]
    assert [d["format"] for d in exports["details"]] == ["html", "pdf"]
    assert all(d["sha256"] == ctx["sha256"] for d in exports["details"])
    n = len(store.audit_events(RUN))
    audit.build_html(store, RUN, hierarchy, now=NOW, log=False)
    assert len(store.audit_events(RUN)) == n


def test_default_hierarchy_used_when_none_given(store):
    ctx = audit.report_context(store, RUN, now=NOW)
    assert ctx["selected"][0]["path"] == load_default().path_str("anxiety")


def test_no_streamlit_import():
    code = "import sys, hdsu_core.audit, hdsu_core.cli_audit; sys.exit('streamlit' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_cli_audit_report(store, tmp_path, capsys):
    p = Parser(prog="hdsu")
    cli_audit.register(p.add_subparsers(dest="cmd", required=True, parser_class=Parser))
    out = tmp_path / "rep" / "r.pdf"
    a = p.parse_args(["audit", "report", RUN, "--format", "pdf", "--out", str(out), "--db", str(store.path)])
    assert a.fn(a) == 0
    assert capsys.readouterr().out.strip() == str(out)
    data = out.read_bytes()
    assert data.startswith(b"%PDF") and pdf_text_contains(data, RUN)
    assert sorted(f.name for f in out.parent.iterdir()) == [
        "r.pdf",
        "r.pdf.sig",
    ]  # the signature beside it, no temp file
    out_html = tmp_path / "r.html"
    a = p.parse_args(["audit", "report", RUN, "--out", str(out_html), "--db", str(store.path)])
    assert a.fn(a) == 0 and RUN in out_html.read_text(encoding="utf-8")
    a = p.parse_args(["audit", "report", "nope", "--out", str(tmp_path / "x.html"), "--db", str(store.path)])
    with pytest.raises(ValueError, match="unknown run nope"):
        a.fn(a)
    assert not (tmp_path / "x.html").exists()
    assert isinstance(a, argparse.Namespace)


def test_report_says_how_the_run_went(store, hierarchy, tmp_path):
    """Why the run stopped, its steps, the weight budget and what the retain repair restored are
    in the report, in words; a run without recorded run info has no such section."""
    ctx = audit.report_context(store, RUN, hierarchy, now=NOW)
    text = {p["label"]: p["value"] for p in ctx["procedure"]}
    assert text["Stopping"].startswith("The run reached the target")
    assert text["Update steps"] == "12" and text["Weights allowed to change"] == "10,000 (0.100 % of all weights)"
    assert (
        "3 retained question(s)" in text["Retain repair"] and "restored 2 of them in 4 step(s)" in text["Retain repair"]
    )
    assert "undone" in text["Retain repair"]
    html = audit.build_html(store, RUN, hierarchy, now=NOW, log=False)
    assert "How the run went" in html and "restored 2 of them" in html
    store.update_run(RUN, summary={"info": {"stopped": "max_steps", "steps": 300, "repair_damaged_before": 0}})
    text = {p["label"]: p["value"] for p in audit.report_context(store, RUN, hierarchy, now=NOW)["procedure"]}
    assert "whole step budget" in text["Stopping"] and text["Retain repair"].startswith("No retained question")
    assert "Settle" not in text  # no settle steps: no row
    store.update_run(RUN, summary={"info": {"stopped": "reached_target", "settle_steps": 2, "settle_reverted": True}})
    text = {p["label"]: p["value"] for p in audit.report_context(store, RUN, hierarchy, now=NOW)["procedure"]}
    assert "2 settle step(s)" in text["Settle"] and "undone" in text["Settle"]
    bare = Store(tmp_path / "bare.duckdb")
    _seed(bare)
    bare.update_run(RUN, summary={})
    ctx = audit.report_context(bare, RUN, hierarchy, now=NOW)
    assert ctx["procedure"] == [] and "How the run went" not in audit.render_html(ctx)
