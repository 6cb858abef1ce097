"""QA items and dataset loaders (MedMCQA, MHQA gold / MHQA-B, generic CSV/JSONL, demo).

Policy (see docs/data_formats.md for the full contract):

* A malformed **file** (missing, unreadable, unknown kind, missing required columns, no usable
  rows) raises :class:`DatasetError` with a one-line message naming the file.
* A malformed **row** is skipped and reported in :attr:`LoadReport.skipped` with the file, the
  row number (physical 1-based line for JSONL and CSV, 1-based element index for a JSON array)
  and a reason. Rows that are kept but look odd (duplicate option texts, an ambiguous
  ``cop`` base, ...) are reported in :attr:`LoadReport.warnings`.
* Bytes never crash a load: each line is decoded as UTF-8, falling back to cp1252 and then
  latin-1; every text field then goes through ``ftfy.fix_text`` (mojibake such as
  ``"TNF-Î±"`` becomes ``"TNF-α"``), and :attr:`LoadReport.repaired` counts the fields it changed.

This module never imports streamlit.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import ftfy

from . import paths


@dataclass(frozen=True)
class QAItem:
    id: str  # unique within a dataset, stable
    question: str
    options: tuple[str, ...]  # >= 2 options
    answer: int  # 0-based index into options
    source: str  # "medmcqa" | "mhqa" | "mhqa_b" | "generic" | "demo"
    labels: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def answer_text(self) -> str:
        return self.options[self.answer]


# --------------------------------------------------------------------------------------------
# Report types
# --------------------------------------------------------------------------------------------


class DatasetError(Exception):
    """A whole file cannot be loaded (missing, unreadable, wrong columns, no usable rows...)."""


@dataclass
class SkippedRow:
    file: str
    row: int  # JSONL/CSV: physical 1-based line number (CSV header is line 1); JSON array: 1-based element
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.row}: {self.reason}"


@dataclass
class LoadReport:
    path: str
    kind: str
    items: list[QAItem]
    skipped: list[SkippedRow]
    repaired: int  # text fields changed by ftfy
    warnings: list[SkippedRow] = field(default_factory=list)  # kept rows with a remark
    encoding: str = "utf-8"  # "utf-8", "cp1252", "latin-1" or "mixed"

    def summary(self) -> str:
        reasons: dict[str, int] = {}
        for s in self.skipped:
            key = s.reason.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
        why = "; ".join(f"{n}x {r}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        return (
            f"{self.kind} {self.path}: {len(self.items)} items, {len(self.skipped)} skipped"
            f"{' (' + why + ')' if why else ''}, {self.repaired} text fields repaired,"
            f" {len(self.warnings)} warnings"
        )


class _RowError(Exception):
    """Internal: this row is skipped with ``str(exc)`` as the reason."""


# The dataset kinds, in the order the CLI lists them: the one list (loaders, specs, CLI choices, engine defaults).
KINDS = ("medmcqa", "mhqa", "mhqa_gold", "mhqa_b", "generic", "demo")
LETTERS = "ABCDEFGH"
MEDMCQA_OPTION_KEYS = ("opa", "opb", "opc", "opd")

# Conservative ftfy: fix mojibake and control characters, but do not rewrite legitimate
# typography (curly quotes, ligatures, full-width characters).
_FTFY = ftfy.TextFixerConfig(uncurl_quotes=False, fix_latin_ligatures=False, fix_character_width=False)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


class _Fixer:
    """Applies ftfy to text fields and counts changes for one row (committed when kept)."""

    def __init__(self) -> None:
        self.total = 0
        self.pending = 0

    def __call__(self, value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float) and math.isnan(value):
            return ""
        if not isinstance(value, str):
            value = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
        fixed = ftfy.fix_text(value, _FTFY)
        if fixed != value:
            self.pending += 1
        return fixed.replace("\x00", "").strip()

    def commit(self) -> None:
        self.total += self.pending
        self.pending = 0

    def discard(self) -> None:
        self.pending = 0


def _norm_answer_text(s: str) -> str:
    """Loose comparison key for answer texts: whitespace, case, stray <>, trailing .,;: ignored."""
    s = re.sub(r"\s+", " ", s).strip()
    s = s.strip("<>").strip()
    s = s.rstrip(".,;:").strip()
    return s.casefold()


def _stable_id(prefix: str, question: str, options: Iterable[str]) -> str:
    h = hashlib.sha1("\x1f".join([question, *options]).encode("utf-8")).hexdigest()[:12]
    return f"{prefix}-{h}"


def _as_int(value: Any, what: str) -> int:
    """Parse an integer that may be written as a float ("3.0"); raise _RowError otherwise."""
    if isinstance(value, bool):
        raise _RowError(f"{what} is a boolean ({value!r})")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise _RowError(f"{what} {value!r} is not an integer")
    text = str(value if value is not None else "").strip()
    if not text:
        raise _RowError(f"{what} is empty")
    try:
        f = float(text)
    except ValueError:
        raise _RowError(f"{what} {text!r} is not a number") from None
    if not (math.isfinite(f) and f.is_integer()):
        raise _RowError(f"{what} {text!r} is not an integer")
    return int(f)


def _duplicate_option_warning(options: tuple[str, ...], answer: int) -> str | None:
    keys = [_norm_answer_text(o) for o in options]
    if len(set(keys)) == len(keys):
        return None
    dup_answer = keys.count(keys[answer]) > 1
    return "duplicate option texts" + (" (the correct option's text appears more than once)" if dup_answer else "")


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def _read_text(path: Path) -> tuple[str, str]:
    """Decode a file line by line: UTF-8, else cp1252, else latin-1. Returns (text, encoding).

    ``encoding`` is "utf-8", "utf-16", "cp1252", "latin-1" or "mixed" (UTF-8 lines and legacy
    lines in one file). Decoding never fails; ftfy later repairs double-encoded text.
    """
    if not path.exists():
        raise DatasetError(f"dataset file not found: {path}")
    if not path.is_file():
        raise DatasetError(f"dataset path is not a file: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read dataset file {path}: {exc.strerror or exc}") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    used: set[str] = set()
    parts: list[str] = []
    for line in data.split(b"\n"):
        for enc in ("utf-8", "cp1252", "latin-1"):  # latin-1 decodes any byte
            try:
                parts.append(line.decode(enc))
            except UnicodeDecodeError:
                continue
            if enc != "utf-8" or not line.isascii():
                used.add(enc)
            break
    legacy = "latin-1" if "latin-1" in used else "cp1252"
    return "\n".join(parts), ("mixed" if "utf-8" in used else legacy)


def _iter_json_records(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """Yield (row number, record or _RowError) for a JSON array, a JSON object or JSONL."""
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    if not first:
        raise DatasetError(f"{path}: file is empty")
    if first.lstrip().startswith(("[", "{")):
        error: json.JSONDecodeError | None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            data, error = None, exc
        else:
            error = None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if isinstance(data, list):
            yield from enumerate(data, start=1)  # a JSON array (pretty-printed or not)
            return
        if error is not None and not any(_is_json_object(ln) for ln in lines[:50]):
            # No line is a record on its own: a broken (pretty-printed) JSON document, not JSONL.
            raise DatasetError(f"{path}: invalid JSON ({error.msg} at line {error.lineno})")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            yield lineno, _RowError(f"invalid JSON ({exc.msg} at column {exc.colno})")


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def _sniff_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _read_csv(path: Path, text: str) -> tuple[list[str], Iterator[tuple[int, dict[str, str] | _RowError]]]:
    """Header (lower-cased, stripped) and an iterator of (physical line, row dict or error)."""
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if not first:
        raise DatasetError(f"{path}: file is empty")
    csv.field_size_limit(1 << 24)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_sniff_delimiter(first))
    try:
        header_raw = next(reader)
        while not any(h.strip() for h in header_raw):
            header_raw = next(reader)
    except StopIteration:
        raise DatasetError(f"{path}: file is empty") from None
    except csv.Error as exc:
        raise DatasetError(f"{path}: cannot parse CSV header ({exc})") from None
    header = [h.strip().lstrip("\ufeff").lower() for h in header_raw]
    seen: set[str] = set()
    for h in header:
        if h and h in seen:
            raise DatasetError(f"{path}: duplicate column {h!r} in the header")
        seen.add(h)

    def rows() -> Iterator[tuple[int, dict[str, str] | _RowError]]:
        while True:
            start = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield start, _RowError(f"malformed CSV ({exc})")
                if reader.line_num < start:  # no progress: give up on the rest
                    return
                continue
            if not any(v.strip() for v in values):
                continue
            if len(values) > len(header) and any(v.strip() for v in values[len(header) :]):
                yield (
                    start,
                    _RowError(f"row has {len(values)} fields but the header has {len(header)} (unquoted delimiter?)"),
                )
                continue
            if len(values) < len(header):
                yield start, _RowError(f"row has {len(values)} fields but the header has {len(header)}")
                continue
            yield start, {h: v for h, v in zip(header, values) if h}

    return header, rows()


def _require_columns(path: Path, header: Iterable[str], required: Iterable[str], what: str) -> None:
    have = set(header)
    missing = [c for c in required if c not in have]
    if missing:
        raise DatasetError(f"{path}: missing required column(s) {', '.join(missing)} for {what}")


# --------------------------------------------------------------------------------------------
# Row assembly shared by all loaders
# --------------------------------------------------------------------------------------------


class _Builder:
    def __init__(self, path: Path, kind: str, encoding: str) -> None:
        self.path = path
        self.kind = kind
        self.fix = _Fixer()
        self.items: list[QAItem] = []
        self.skipped: list[SkippedRow] = []
        self.warnings: list[SkippedRow] = []
        self.encoding = encoding
        self._ids: dict[str, int] = {}

    def skip(self, row: int, reason: str) -> None:
        self.fix.discard()
        self.skipped.append(SkippedRow(str(self.path), row, reason))

    def warn(self, row: int, reason: str) -> None:
        self.warnings.append(SkippedRow(str(self.path), row, reason))

    def run(self, records: Iterable[tuple[int, Any]], make: Callable[[int, Any], QAItem]) -> None:
        for row, rec in records:
            if isinstance(rec, _RowError):
                self.skip(row, str(rec))
                continue
            try:
                item = make(row, rec)
            except _RowError as exc:
                self.skip(row, str(exc))
                continue
            self.add(row, item)

    def add(self, row: int, item: QAItem) -> None:
        if item.id in self._ids:
            self.skip(row, f"duplicate id {item.id!r} (first seen at row {self._ids[item.id]})")
            return
        self._ids[item.id] = row
        self.fix.commit()
        w = _duplicate_option_warning(item.options, item.answer)
        if w:
            self.warn(row, w)
        self.items.append(item)

    def check(self, question: str, options: tuple[str, ...], answer: int) -> None:
        if not question:
            raise _RowError("empty question")
        if len(options) < 2:
            raise _RowError(f"only {len(options)} option(s); at least 2 are needed")
        if not 0 <= answer < len(options):
            raise _RowError(f"answer index {answer} out of range for {len(options)} options (0-based)")

    def report(self) -> LoadReport:
        if not self.items:
            detail = f"; first problem: {self.skipped[0]}" if self.skipped else ""
            raise DatasetError(
                f"{self.path}: no usable rows for kind {self.kind!r} ({len(self.skipped)} skipped{detail})"
            )
        return LoadReport(
            path=str(self.path),
            kind=self.kind,
            items=self.items,
            skipped=self.skipped,
            repaired=self.fix.total,
            warnings=self.warnings,
            encoding=self.encoding,
        )


# --------------------------------------------------------------------------------------------
# MedMCQA
# --------------------------------------------------------------------------------------------


def _medmcqa_raw_answer(rec: dict) -> tuple[str, Any]:
    for key in ("cop", "answer_idx", "label", "answer_index"):
        if key in rec and rec[key] is not None and rec[key] != "":
            return key, rec[key]
    return "", None


def _medmcqa_options(rec: dict, fix: _Fixer) -> tuple[str, ...]:
    if isinstance(rec.get("options"), list):
        raw = list(rec["options"])
    elif isinstance(rec.get("options"), dict):
        opts = rec["options"]
        raw = [opts[k] for k in sorted(opts, key=lambda k: str(k).upper())]
    elif any(k in rec for k in MEDMCQA_OPTION_KEYS):
        raw = [rec.get(k) for k in MEDMCQA_OPTION_KEYS]
    else:
        raise _RowError("no options (expected opa..opd or an 'options' list)")
    options = tuple(fix(o) for o in raw)
    for i, o in enumerate(options):
        if not o:
            raise _RowError(f"option {LETTERS[i] if i < len(LETTERS) else i + 1} is empty")
    return options


def _decide_cop_base(records: list[tuple[int, Any]], cop_base: str | int, path: Path) -> tuple[int, str | None]:
    """Return (base, warning). ``cop_base`` is "auto", 0 or 1 (also "0"/"1").

    auto: any cop == 0 -> 0-based; else any cop == number of options (4) -> 1-based; both
    present -> DatasetError; neither -> 0-based (Hugging Face convention) with a warning.
    Only the integer ``cop`` field is affected; letters and ``answer_idx`` are unambiguous.
    """
    if str(cop_base) in ("0", "1"):
        return int(cop_base), None
    if cop_base != "auto":
        raise DatasetError(f"{path}: cop_base must be 'auto', 0 or 1, not {cop_base!r}")
    has_zero = has_top = False
    for _, rec in records:
        if not isinstance(rec, dict) or rec.get("cop") in (None, ""):
            continue
        raw = rec["cop"]
        if isinstance(raw, str) and len(raw.strip()) == 1 and raw.strip().upper() in LETTERS:
            continue
        try:
            value = _as_int(raw, "cop")
        except _RowError:
            continue
        n = len(rec["options"]) if isinstance(rec.get("options"), (list, dict)) else len(MEDMCQA_OPTION_KEYS)
        has_zero |= value == 0
        has_top |= value == n
    if has_zero and has_top:
        raise DatasetError(
            f"{path}: 'cop' contains both 0 and the last option number, so it is neither"
            " 0-based nor 1-based; pass cop_base=0 or cop_base=1"
        )
    if has_zero:
        return 0, None
    if has_top:
        return 1, None
    return 0, (
        "cop base ambiguous (no cop is 0 or the last option number): treated as 0-based;"
        " pass cop_base=1 for the original 1-based release"
    )


def _load_medmcqa(path: Path, *, cop_base: str | int = "auto") -> LoadReport:
    text, enc = _read_text(path)
    records = list(_iter_json_records(path, text))
    base, base_warning = _decide_cop_base(records, cop_base, path)
    b = _Builder(path, "medmcqa", enc)
    if base_warning:
        b.warn(0, base_warning)
    fix = b.fix

    def make(row: int, rec: Any) -> QAItem:
        if not isinstance(rec, dict):
            raise _RowError(f"record is a {type(rec).__name__}, not an object")
        question = fix(rec.get("question"))
        options = _medmcqa_options(rec, fix)
        key, raw = _medmcqa_raw_answer(rec)
        if not key:
            raise _RowError("no answer (expected 'cop' or 'answer_idx')")
        letter = raw.strip().upper() if isinstance(raw, str) else ""
        if len(letter) == 1 and letter in LETTERS:
            answer = LETTERS.index(letter)
        else:
            answer = _as_int(raw, key)
            if key == "cop":
                answer -= base
        b.check(question, options, answer)
        labels = {
            "subject_name": fix(rec.get("subject_name", rec.get("subject"))),
            "topic_name": fix(rec.get("topic_name", rec.get("topic"))),
            "choice_type": fix(rec.get("choice_type")),
        }
        rid = fix(rec.get("id"))
        if not rid:
            rid = _stable_id("medmcqa", question, options)
        return QAItem(rid, question, options, answer, "medmcqa", labels)

    b.run(records, make)
    return b.report()


# --------------------------------------------------------------------------------------------
# MHQA (gold and MHQA-B)
# --------------------------------------------------------------------------------------------

MHQA_GOLD_NUMBER, MHQA_GOLD_TEXT = "correct_option_number", "correct_option"
MHQA_B_NUMBER, MHQA_B_TEXT = "correct_option_num", "correct_answer"
ANSWER_CONFLICT = ("skip", "text", "number")


def _detect_mhqa(path: Path, header: list[str]) -> str:
    cols = set(header)
    if "valid_question" in cols or MHQA_B_NUMBER in cols:
        return "mhqa_b"
    if MHQA_GOLD_NUMBER in cols:
        return "mhqa_gold"
    raise DatasetError(
        f"{path}: not an MHQA file: found neither {MHQA_GOLD_NUMBER!r} (gold) nor"
        f" {MHQA_B_NUMBER!r} (MHQA-B) among columns {', '.join(header)}"
    )


def _parse_bool(value: str) -> bool | None:
    v = value.strip().lower()
    if v in ("true", "1", "1.0", "yes", "y", "t"):
        return True
    if v in ("false", "0", "0.0", "no", "n", "f"):
        return False
    return None


def _load_mhqa(path: Path, kind: str = "mhqa", *, answer_conflict: str = "skip") -> LoadReport:
    if answer_conflict not in ANSWER_CONFLICT:
        raise DatasetError(f"{path}: answer_conflict must be one of {ANSWER_CONFLICT}, not {answer_conflict!r}")
    text, enc = _read_text(path)
    header, rows = _read_csv(path, text)
    detected = _detect_mhqa(path, header)
    if kind == "mhqa":
        kind = detected
    elif kind != detected:
        raise DatasetError(f"{path}: asked for {kind} but the columns look like {detected}")
    option_cols: list[str] = []
    while f"option{len(option_cols) + 1}" in header:
        option_cols.append(f"option{len(option_cols) + 1}")
    if kind == "mhqa_gold":
        number_col, text_col, source = MHQA_GOLD_NUMBER, MHQA_GOLD_TEXT, "mhqa"
    else:
        number_col, text_col, source = MHQA_B_NUMBER, MHQA_B_TEXT, "mhqa_b"
    _require_columns(path, header, ["id", "question", "option1", "option2", number_col], kind)
    b = _Builder(path, kind, enc)
    fix = b.fix

    def make(row: int, rec: dict[str, str]) -> QAItem:
        if "valid_question" in rec:
            valid = _parse_bool(rec["valid_question"])
            if valid is False:
                raise _RowError("valid_question is False")
            if valid is None:
                raise _RowError(f"valid_question is {rec['valid_question']!r} (expected True/False)")
        pmid = fix(rec["id"])
        if pmid.endswith(".0") and pmid[:-2].isdigit():
            pmid = pmid[:-2]
        if not pmid:
            raise _RowError("empty id")
        question = fix(rec["question"])
        raw_options = [fix(rec[c]) for c in option_cols]
        while raw_options and not raw_options[-1]:
            raw_options.pop()
        if any(not o for o in raw_options):
            raise _RowError(f"option{raw_options.index('') + 1} is empty")
        options = tuple(raw_options)
        number = _as_int(rec[number_col], number_col)
        if not 1 <= number <= len(options):
            raise _RowError(f"{number_col} {number} out of range 1..{len(options)}")
        answer = number - 1
        given = fix(rec.get(text_col, ""))
        if given:
            key = _norm_answer_text(given)
            if _norm_answer_text(options[answer]) != key:
                matches = [i for i, o in enumerate(options) if _norm_answer_text(o) == key]
                if len(matches) == 1:
                    msg = (
                        f"{number_col} {number} ({options[answer]!r}) disagrees with {text_col}"
                        f" {given!r} (option {matches[0] + 1})"
                    )
                    if answer_conflict == "skip":
                        raise _RowError(msg)
                    if answer_conflict == "text":
                        answer = matches[0]
                    b.warn(row, msg + f"; kept using the {answer_conflict}")
                else:
                    b.warn(row, f"{text_col} {given!r} matches no option; kept {number_col} {number}")
        b.check(question, options, answer)
        labels = {"topic": fix(rec.get("topic", "")), "type": fix(rec.get("type", "")), "pmid": pmid}
        qhash = hashlib.sha1(question.encode("utf-8")).hexdigest()[:8]
        return QAItem(f"{pmid}-{qhash}", question, options, answer, source, labels)

    b.run(rows, make)
    return b.report()


# --------------------------------------------------------------------------------------------
# Generic (a hospital's own data) and demo
# --------------------------------------------------------------------------------------------

GENERIC_OPTION_COLS = tuple(f"option_{c.lower()}" for c in LETTERS)


def _letter_index(value: str, n: int, what: str) -> int:
    v = value.strip().upper()
    if len(v) == 1 and v in LETTERS:
        idx = LETTERS.index(v)
        if idx >= n:
            raise _RowError(f"{what} {value!r} out of range for {n} options (A..{LETTERS[n - 1]})")
        return idx
    raise _RowError(f"{what} {value!r} is not a letter A..{LETTERS[max(n, 1) - 1]}")


def _generic_answer(value: Any, n: int, what: str) -> int:
    """Letter A..H, or a 0-based integer (also "2", "2.0")."""
    if isinstance(value, str) and value.strip() and not re.fullmatch(r"\s*-?\d+(\.0*)?\s*", value):
        return _letter_index(value, n, what)
    idx = _as_int(value, what)
    if not 0 <= idx < n:
        raise _RowError(f"{what} {idx} out of range for {n} options (0-based: 0..{n - 1})")
    return idx


def _generic_options(raw: list[Any], fix: _Fixer) -> tuple[str, ...]:
    options = [fix(o) for o in raw]
    while options and not options[-1]:
        options.pop()
    if "" in options:
        gap = options.index("")
        raise _RowError(f"option {LETTERS[gap]} is empty but a later option is filled")
    return tuple(options)


def _generic_json_make(b: _Builder, source: str) -> Callable[[int, Any], QAItem]:
    fix = b.fix

    def make(row: int, rec: Any) -> QAItem:
        if not isinstance(rec, dict):
            raise _RowError(f"record is a {type(rec).__name__}, not an object")
        question = fix(rec.get("question"))
        raw = rec.get("options")
        if isinstance(raw, dict):
            raw = [raw[k] for k in sorted(raw, key=lambda k: str(k).upper())]
        if not isinstance(raw, list):
            raise _RowError("'options' is missing or not a list")
        if len(raw) > len(LETTERS):
            raise _RowError(f"{len(raw)} options; at most {len(LETTERS)} are supported")
        options = _generic_options(raw, fix)
        if len(options) < 2:
            raise _RowError(f"only {len(options)} non-empty option(s); at least 2 are needed")
        has_idx = rec.get("answer") is not None and rec.get("answer") != ""
        has_letter = rec.get("answer_letter") not in (None, "")
        if not has_idx and not has_letter:
            raise _RowError("no answer (expected 'answer' (0-based int) or 'answer_letter')")
        answer = _generic_answer(rec["answer"], len(options), "answer") if has_idx else None
        if has_letter:
            by_letter = _letter_index(str(rec["answer_letter"]), len(options), "answer_letter")
            if answer is not None and answer != by_letter:
                raise _RowError(f"answer {answer} and answer_letter {rec['answer_letter']!r} disagree")
            answer = by_letter
        assert answer is not None
        b.check(question, options, answer)
        labels_raw = rec.get("labels") or {}
        if not isinstance(labels_raw, dict):
            raise _RowError("'labels' is not an object")
        labels = {str(k): fix(v) for k, v in labels_raw.items()}
        if rec.get("concept_id") not in (None, ""):
            labels["concept_id"] = fix(rec["concept_id"])
        rid = fix(rec.get("id"))
        if not rid:
            rid = _stable_id(source, question, options)
        return QAItem(rid, question, options, answer, source, labels)

    return make


def _load_generic(path: Path, kind: str = "generic") -> LoadReport:
    source = "demo" if kind == "demo" else "generic"
    text, enc = _read_text(path)
    b = _Builder(path, kind, enc)
    if path.suffix.lower() in (".csv", ".tsv") or (
        path.suffix.lower() not in (".jsonl", ".json", ".ndjson") and not text.lstrip().startswith(("{", "["))
    ):
        header, rows = _read_csv(path, text)
        _require_columns(path, header, ["question", "option_a", "option_b", "answer"], f"{kind} CSV")
        opt_cols = [c for c in GENERIC_OPTION_COLS if c in header]
        extra = [h for h in header if h and h not in ("id", "question", "answer", "concept_id", *GENERIC_OPTION_COLS)]
        fix = b.fix

        def make(row: int, rec: dict[str, str]) -> QAItem:
            question = fix(rec["question"])
            options = _generic_options([rec[c] for c in opt_cols], fix)
            if len(options) < 2:
                raise _RowError(f"only {len(options)} non-empty option(s); at least 2 are needed")
            answer = _generic_answer(rec["answer"], len(options), "answer")
            b.check(question, options, answer)
            labels = {h: fix(rec[h]) for h in extra}
            if rec.get("concept_id", "").strip():
                labels["concept_id"] = fix(rec["concept_id"])
            rid = fix(rec.get("id", ""))
            if not rid:
                rid = _stable_id(source, question, options)
            return QAItem(rid, question, options, answer, source, labels)

        b.run(rows, make)
    else:
        b.run(_iter_json_records(path, text), _generic_json_make(b, source))
    return b.report()


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def load(kind: str, path: str | Path | None = None, **options: Any) -> LoadReport:
    """Load a dataset file of ``kind`` (one of :data:`KINDS`).

    Options: ``cop_base`` ("auto" | 0 | 1) for medmcqa; ``answer_conflict``
    ("skip" | "text" | "number") for mhqa kinds. ``path`` may be omitted for ``demo``.
    """
    kind = (kind or "").strip().lower()
    if kind not in KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r} for {path}; expected one of {', '.join(KINDS)}")
    if path is None or str(path).strip() == "":
        if kind != "demo":
            raise DatasetError(f"no path given for dataset kind {kind!r}")
        path = paths.DEMO_KB
    p = Path(path).expanduser()
    allowed = {
        "medmcqa": {"cop_base"},
        "mhqa": {"answer_conflict"},
        "mhqa_gold": {"answer_conflict"},
        "mhqa_b": {"answer_conflict"},
    }.get(kind, set())
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f"load({kind!r}) got unexpected option(s): {', '.join(sorted(unknown))}")
    if kind == "medmcqa":
        return _load_medmcqa(p, **options)
    if kind in ("mhqa", "mhqa_gold", "mhqa_b"):
        return _load_mhqa(p, kind, **options)
    return _load_generic(p, kind)


def load_items(kind: str, path: str | Path | None = None, **options: Any) -> list[QAItem]:
    return load(kind, path, **options).items


def parse_dataset_spec(spec: str) -> tuple[str, Path]:
    """``"kind:path"`` -> ``(kind, Path)``; ``"demo"`` alone means the bundled demo KB."""
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError("empty dataset spec; expected 'kind:path', e.g. 'medmcqa:data/dev.jsonl'")
    spec = spec.strip()
    kind, sep, rest = spec.partition(":")
    kind = kind.strip().lower()
    if not sep:
        if kind == "demo":
            return "demo", paths.DEMO_KB
        raise DatasetError(f"bad dataset spec {spec!r}; expected 'kind:path' with kind one of {', '.join(KINDS)}")
    if kind not in KINDS:
        raise DatasetError(f"bad dataset spec {spec!r}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    rest = rest.strip()
    if not rest:
        if kind == "demo":
            return "demo", paths.DEMO_KB
        raise DatasetError(f"bad dataset spec {spec!r}: no path after '{kind}:'")
    return kind, Path(rest).expanduser()


def dataset_kind(spec: str) -> str:
    """The kind named by a dataset spec (``"demo"`` or ``"KIND:PATH"``), as written: no check
    that it is one of :data:`KINDS` (``parse_dataset_spec`` refuses unknown kinds)."""
    return "demo" if spec == "demo" else spec.split(":", 1)[0]


def load_spec(spec: str, **options: Any) -> LoadReport:
    kind, path = parse_dataset_spec(spec)
    return load(kind, path, **options)
