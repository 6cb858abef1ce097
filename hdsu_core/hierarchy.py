"""Four-level medical concept hierarchy over a networkx DiGraph (edges parent -> child).

Levels: 1 foundational science, 2 clinical domain, 3 specialty topic, 4 specific detail.
A child is exactly one level below its parent; level-1 concepts have no parent. The structure is
a tree (forest of L1 roots). JSON format ``hdsu-hierarchy/1`` is documented in docs/architecture.md.

Validation works on the raw JSON so that *every* violation is reported with the concept ids
involved, instead of failing on the first one while building the graph.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import networkx as nx

from hdsu_core import paths

FORMAT = "hdsu-hierarchy/1"
LEVEL_NAMES = {1: "foundational science", 2: "clinical domain", 3: "specialty topic", 4: "specific detail"}
MAX_LEVEL = 4
ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


@dataclass
class Concept:
    id: str
    name: str
    level: int
    parent: str | None = None
    terms: list[str] = field(default_factory=list)
    matchers: list[dict] = field(default_factory=list)
    codes: dict = field(default_factory=dict)
    description: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Concept":
        return cls(
            id=str(d["id"]),
            name=str(d.get("name") or ""),
            level=int(d["level"]),
            parent=d.get("parent") or None,  # "" means no parent, as in validate_data
            terms=[str(t) for t in (d.get("terms") or [])],
            matchers=[dict(m) for m in (d.get("matchers") or [])],
            codes=dict(d.get("codes") or {}),
            description=str(d.get("description") or ""),
        )


@dataclass(frozen=True)
class Violation:
    kind: str  # cycle | level_skip | duplicate_id | orphan | missing_name | duplicate_term |
    # multiple_parents | bad_level | bad_id | bad_matcher | bad_field | bad_format
    concept_ids: tuple[str, ...]
    message: str

    def __str__(self) -> str:
        ids = ",".join(self.concept_ids) if self.concept_ids else "-"
        return f"{self.kind}: [{ids}] {self.message}"


class HierarchyError(ValueError):
    """Raised when a hierarchy (or an edit) is invalid; carries every violation."""

    def __init__(self, violations: list[Violation] | str):
        if isinstance(violations, str):
            violations = [Violation("invalid", (), violations)]
        self.violations = list(violations)
        super().__init__("; ".join(str(v) for v in self.violations))


def slugify(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return s or "concept"


# --------------------------------------------------------------------------------------------
# Reading a document
# --------------------------------------------------------------------------------------------
# Bigger than any real hierarchy (all of ICD-10-CM as concepts is about 25 MB): a bigger file is
# refused before it is parsed, so an upload cannot tie up the app's memory.
MAX_FILE_BYTES = 32_000_000


def check_size(size: int, source: str = "hierarchy") -> None:
    if size > MAX_FILE_BYTES:
        message = (
            f"{source}: file is {size / 1e6:.1f} MB; hierarchy files up to {MAX_FILE_BYTES / 1e6:.0f} MB are accepted"
        )
        raise HierarchyError([Violation("bad_format", (), message)])


def parse_document(data: bytes | str, source: str = "hierarchy") -> Any:
    """The JSON document of a hierarchy file or upload. Raises HierarchyError (one ``bad_format``
    violation, one line) for a file too large, bytes that are not UTF-8, text that is not JSON,
    or JSON nested too deeply for the parser."""
    check_size(len(data.encode("utf-8") if isinstance(data, str) else data), source)
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as e:
        raise HierarchyError(
            [Violation("bad_format", (), f"{source}: not UTF-8 text ({e.reason} at byte {e.start})")]
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise HierarchyError([Violation("bad_format", (), f"{source}: not valid JSON ({e})")]) from None
    except RecursionError:
        raise HierarchyError(
            [Violation("bad_format", (), f"{source}: JSON nested too deeply to be a hierarchy")]
        ) from None


# --------------------------------------------------------------------------------------------
# Validation of raw JSON
# --------------------------------------------------------------------------------------------
def validate_data(data) -> list[Violation]:
    """Every violation in a raw hierarchy document (dict as loaded from JSON)."""
    out: list[Violation] = []
    if not isinstance(data, dict) or not isinstance(data.get("concepts"), list):
        return [Violation("bad_format", (), 'expected a JSON object with a "concepts" list')]
    fmt = data.get("format", FORMAT)
    if fmt != FORMAT:
        out.append(Violation("bad_format", (), f"unknown format {fmt!r} (expected {FORMAT!r})"))
    raw = data["concepts"]
    seen: dict[str, dict] = {}
    parent_of: dict[str, str | None] = {}
    level_of: dict[str, int] = {}
    for i, c in enumerate(raw):
        if not isinstance(c, dict) or "id" not in c:
            out.append(Violation("bad_format", (), f"concept #{i + 1} is not an object with an id"))
            continue
        cid = str(c["id"])
        if cid in seen:
            out.append(Violation("duplicate_id", (cid,), f"id {cid!r} is used more than once"))
            continue
        seen[cid] = c
        if not ID_RE.match(cid):
            out.append(Violation("bad_id", (cid,), "id must be lowercase letters, digits, '_', '.', '-'"))
        if not str(c.get("name") or "").strip():
            out.append(Violation("missing_name", (cid,), "concept has no name"))
        parents = c.get("parents")
        if isinstance(parents, list) and len(parents) > 1:
            out.append(
                Violation(
                    "multiple_parents",
                    (cid, *map(str, parents)),
                    f"{cid!r} has {len(parents)} parents; the hierarchy must be a tree",
                )
            )
            parent = parents[0]
        elif isinstance(parents, list) and parents:
            parent = parents[0]
        else:
            parent = c.get("parent")
        parent_of[cid] = None if parent in (None, "") else str(parent)
        try:
            lvl = int(c.get("level"))  # type: ignore[arg-type]  # a missing level: TypeError, reported below
            if lvl < 1 or lvl > MAX_LEVEL:
                raise ValueError
            level_of[cid] = lvl
        except (TypeError, ValueError):
            out.append(Violation("bad_level", (cid,), f"level must be 1..{MAX_LEVEL}, got {c.get('level')!r}"))
        out += _field_problems(cid, c)
    for cid, parent in parent_of.items():
        if parent is None:
            if level_of.get(cid, 1) != 1:
                out.append(Violation("orphan", (cid,), f"level-{level_of[cid]} concept has no parent"))
            continue
        if parent not in seen:
            out.append(Violation("orphan", (cid, parent), f"parent {parent!r} does not exist"))
            continue
        if parent == cid:
            continue  # reported as a cycle below
        if cid in level_of and parent in level_of and level_of[cid] != level_of[parent] + 1:
            out.append(
                Violation(
                    "level_skip",
                    (cid, parent),
                    f"level {level_of[cid]} under level-{level_of[parent]} parent "
                    f"(a child must be exactly one level below)",
                )
            )
    g = nx.DiGraph()
    g.add_edges_from((p, c) for c, p in parent_of.items() if p is not None and p in seen)
    for cyc in nx.simple_cycles(g):
        out.append(Violation("cycle", tuple(sorted(cyc)), "parent links form a cycle"))
    return out


def _field_problems(cid: str, c: dict) -> list[Violation]:
    """Fields of the wrong JSON type (``"terms": 5``: reported, never a crash while building),
    duplicate terms and incomplete matchers of one concept."""
    want = {"terms": list, "matchers": list, "codes": dict, "name": str, "description": str}
    out = [
        Violation("bad_field", (cid,), f"{key} must be a {kind.__name__}, not {type(c[key]).__name__}")
        for key, kind in want.items()
        if c.get(key) is not None and not isinstance(c[key], kind)
    ]
    if out:
        return out
    terms = [str(t).strip().lower() for t in (c.get("terms") or [])]
    dups = sorted({t for t in terms if terms.count(t) > 1})
    if dups:
        out.append(Violation("duplicate_term", (cid,), f"duplicate term(s) {dups}"))
    for m in c.get("matchers") or []:
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("field"), str)
            or not isinstance(m.get("source"), str)
            or not m["field"]
            or not m["source"]
            or "equals" not in m
        ):
            out.append(Violation("bad_matcher", (cid,), f"matcher needs source, field, equals: {m!r}"))
    return out


# --------------------------------------------------------------------------------------------
# Hierarchy
# --------------------------------------------------------------------------------------------
class Hierarchy:
    """A validated concept tree. Edit operations validate and leave the object unchanged on error."""

    def __init__(self, name: str = "Hierarchy"):
        self.name = name
        self.graph = nx.DiGraph()

    # ---- construction / io -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict) -> "Hierarchy":
        violations = validate_data(data)
        if violations:
            raise HierarchyError(violations)
        h = cls(str(data.get("name") or "Hierarchy"))
        for c in data["concepts"]:
            con = Concept.from_dict(c)
            if isinstance(c.get("parents"), list) and c["parents"]:
                con.parent = c["parents"][0]
            h.graph.add_node(con.id, concept=con)
        for cid in list(h.graph.nodes):
            p = h.concept(cid).parent
            if p:
                h.graph.add_edge(p, cid)
        return h

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "name": self.name,
            "concepts": [self.concept(cid).to_dict() for cid in self.ordered_ids()],
        }

    @classmethod
    def load(cls, path: str | Path) -> "Hierarchy":
        path = Path(path)
        if not path.exists():
            raise HierarchyError(f"hierarchy file not found: {path}")
        check_size(path.stat().st_size, str(path))  # refused before it is read
        return cls.from_dict(parse_document(path.read_bytes(), str(path)))

    def save(self, path: str | Path) -> None:
        paths.atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")

    def copy(self) -> "Hierarchy":
        return Hierarchy.from_dict(copy.deepcopy(self.to_dict()))

    # ---- queries -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    def __contains__(self, cid: str) -> bool:
        return cid in self.graph

    def concept(self, cid: str) -> Concept:
        try:
            return self.graph.nodes[cid]["concept"]
        except KeyError:
            raise HierarchyError([Violation("unknown_concept", (cid,), f"no concept with id {cid!r}")]) from None

    def concepts(self) -> list[Concept]:
        return [self.concept(c) for c in self.ordered_ids()]

    def roots(self) -> list[str]:
        return sorted(n for n in self.graph.nodes if self.graph.in_degree(n) == 0)

    def children(self, cid: str) -> list[str]:
        return sorted(self.graph.successors(cid))

    def parent(self, cid: str) -> str | None:
        return self.concept(cid).parent

    def ancestors(self, cid: str) -> list[str]:
        """Parent first, root last."""
        out, p = [], self.parent(cid)
        while p is not None:
            out.append(p)
            p = self.parent(p)
        return out

    def descendants(self, cid: str) -> set[str]:
        self.concept(cid)
        return set(nx.descendants(self.graph, cid))

    def subtree(self, cid: str) -> set[str]:
        return {cid} | self.descendants(cid)

    def path(self, cid: str) -> list[str]:
        """Names from the root down to the concept."""
        return [self.concept(c).name for c in [*reversed(self.ancestors(cid)), cid]]

    def path_str(self, cid: str) -> str:
        return " › ".join(self.path(cid))

    def ordered_ids(self) -> list[str]:
        """Depth-first, children sorted by id: stable for export and display."""
        out: list[str] = []
        stack = list(reversed(self.roots()))
        while stack:
            n = stack.pop()
            out.append(n)
            stack.extend(reversed(self.children(n)))
        return out

    def level_counts(self) -> dict[int, int]:
        counts = {lvl: 0 for lvl in range(1, MAX_LEVEL + 1)}
        for _, d in self.graph.nodes(data=True):
            counts[d["concept"].level] += 1
        return counts

    def find(self, text: str, limit: int = 50) -> list[str]:
        q = text.strip().lower()
        hits = [
            c.id for c in self.concepts() if q in c.id or q in c.name.lower() or any(q in t.lower() for t in c.terms)
        ]
        return hits[:limit]

    def expand_selection(self, selected: Iterable[str]) -> set[str]:
        """Every concept under (and including) the selected ones."""
        out: set[str] = set()
        for s in selected:
            out |= self.subtree(s)
        return out

    # ---- edits (validated, all-or-nothing) -----------------------------------------------------
    def _apply(self, mutate) -> None:
        data = copy.deepcopy(self.to_dict())
        by_id = {c["id"]: c for c in data["concepts"]}
        mutate(data, by_id)
        new = Hierarchy.from_dict(data)  # raises HierarchyError with every violation
        self.graph = new.graph
        self.name = new.name

    def add(self, concept: Concept | dict) -> Concept:
        con = concept if isinstance(concept, Concept) else Concept.from_dict(concept)

        def mutate(data, by_id):
            data["concepts"].append(con.to_dict())

        self._apply(mutate)
        return self.concept(con.id)

    def rename(self, cid: str, name: str) -> None:
        self.concept(cid)

        def mutate(data, by_id):
            by_id[cid]["name"] = name.strip()

        self._apply(mutate)

    def update(self, cid: str, **fields) -> None:
        """Edit name / terms / matchers / codes / description (not id, level or parent)."""
        self.concept(cid)
        allowed = {"name", "terms", "matchers", "codes", "description"}
        bad = set(fields) - allowed
        if bad:
            raise HierarchyError(f"cannot update field(s) {sorted(bad)} (use move for parent/level)")

        def mutate(data, by_id):
            for k, v in fields.items():
                if k == "terms":
                    v = [str(t).strip() for t in v if str(t).strip()]
                by_id[cid][k] = v

        self._apply(mutate)

    def set_terms(self, cid: str, terms: Iterable[str]) -> None:
        self.update(cid, terms=list(terms))

    def move(self, cid: str, new_parent: str | None) -> None:
        """Move a subtree under ``new_parent`` (None: make it a root). Levels of the whole subtree
        shift so the child sits exactly one level below its new parent; refused if that would leave
        levels 1..4, or would create a cycle."""
        self.concept(cid)
        if new_parent is not None:
            self.concept(new_parent)
            if new_parent in self.subtree(cid):
                raise HierarchyError(
                    [
                        Violation(
                            "cycle", (cid, new_parent), f"cannot move {cid!r} under its own descendant {new_parent!r}"
                        )
                    ]
                )
        new_level = 1 if new_parent is None else self.concept(new_parent).level + 1
        delta = new_level - self.concept(cid).level
        sub = self.subtree(cid)

        def mutate(data, by_id):
            by_id[cid]["parent"] = new_parent
            for s in sub:
                by_id[s]["level"] = by_id[s]["level"] + delta

        self._apply(mutate)

    def delete(self, cid: str, mode: str = "subtree") -> list[str]:
        """Delete a concept. ``mode="subtree"`` removes everything under it; ``"reattach"`` moves
        its children (with their subtrees, one level up) to its parent. Returns removed ids."""
        con = self.concept(cid)
        if mode not in ("subtree", "reattach"):
            raise HierarchyError(f"unknown delete mode {mode!r} (subtree or reattach)")
        if mode == "subtree":
            gone = self.subtree(cid)

            def mutate(data, by_id):
                data["concepts"] = [c for c in data["concepts"] if c["id"] not in gone]

            self._apply(mutate)
            return sorted(gone)
        below = self.descendants(cid)

        def mutate(data, by_id):  # type: ignore[no-redef]  # the other branch returned above
            for c in data["concepts"]:
                if c["id"] in below:
                    c["level"] -= 1
                if c.get("parent") == cid:
                    c["parent"] = con.parent
            data["concepts"] = [c for c in data["concepts"] if c["id"] != cid]

        self._apply(mutate)
        return [cid]

    # ---- diff ----------------------------------------------------------------------------------
    def diff(self, newer: "Hierarchy") -> dict:
        """What changed from self to ``newer``: added / removed ids and changed fields."""
        a = {c.id: c.to_dict() for c in self.concepts()}
        b = {c.id: c.to_dict() for c in newer.concepts()}
        changed = {}
        for cid in sorted(a.keys() & b.keys()):
            fields = {k: [a[cid][k], b[cid][k]] for k in a[cid] if a[cid][k] != b[cid][k]}
            if fields:
                changed[cid] = fields
        return {"added": sorted(b.keys() - a.keys()), "removed": sorted(a.keys() - b.keys()), "changed": changed}


def subtree_totals(
    hierarchy: Hierarchy, direct: Mapping[str, Mapping[str, float]], keys: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The roll-up of per-concept values up the tree: for every concept of the hierarchy, each of
    ``keys`` summed over the concept and everything below it (0 where nothing is below). ``direct``
    holds the values recorded on each concept itself; ids the hierarchy lacks are ignored."""
    out: dict[str, dict[str, Any]] = {cid: {k: 0 for k in keys} for cid in hierarchy.graph.nodes}  # ints stay ints
    for cid, values in direct.items():
        if cid not in hierarchy:
            continue
        for a in [cid, *hierarchy.ancestors(cid)]:
            for k in keys:
                out[a][k] += values.get(k, 0)
    return out


def diff_summary(diff: dict) -> str:
    parts = []
    if diff.get("added"):
        parts.append(f"+{len(diff['added'])} added")
    if diff.get("removed"):
        parts.append(f"-{len(diff['removed'])} removed")
    if diff.get("changed"):
        parts.append(f"~{len(diff['changed'])} changed")
    return ", ".join(parts) or "no changes"


def load_default() -> Hierarchy:
    return Hierarchy.load(paths.DEFAULT_HIERARCHY)
