"""Deterministic demo knowledge base: multiple-choice items generated from ``data/demo_facts.json``.

Every fact row names a level-4 concept of the hierarchy and gives short answers for a fixed set of
attributes. One item is generated per (concept, attribute): the fact is the correct option and the
distractors are the same attribute's answers of *other* concepts, drawn with ``random.Random(seed)``.
``python -m hdsu_core.demo_kb`` regenerates ``data/demo_kb.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from . import paths
from .datasets import QAItem

FACTS_FORMAT = "hdsu-demo-facts/1"


def _read_facts(facts_path: Path) -> tuple[dict[str, str], list[dict]]:
    data = json.loads(Path(facts_path).read_text(encoding="utf-8"))
    if data.get("format") != FACTS_FORMAT:
        raise ValueError(f"{facts_path}: expected format {FACTS_FORMAT!r}, got {data.get('format')!r}")
    attributes = data["attributes"]
    facts = data["facts"]
    seen: set[str] = set()
    for row in facts:
        cid = row.get("concept_id")
        if not cid or cid in seen:
            raise ValueError(f"{facts_path}: missing or duplicate concept_id {cid!r}")
        seen.add(cid)
        if not row.get("name"):
            raise ValueError(f"{facts_path}: fact {cid!r} has no name")
    return attributes, facts


def _hierarchy_ids(hierarchy_path: Path) -> set[str]:
    data = json.loads(Path(hierarchy_path).read_text(encoding="utf-8"))
    return {c["id"] for c in data.get("concepts", [])}


def generate(
    facts_path=paths.DEMO_FACTS, hierarchy_path=paths.DEFAULT_HIERARCHY, seed: int = 0, n_options: int = 4
) -> list[QAItem]:
    """One item per (concept, attribute), in facts order then attribute order; fully deterministic."""
    if n_options < 2:
        raise ValueError("n_options must be >= 2")
    attributes, facts = _read_facts(Path(facts_path))
    known = _hierarchy_ids(Path(hierarchy_path))
    missing = [f["concept_id"] for f in facts if f["concept_id"] not in known]
    if missing:
        raise ValueError(f"demo facts name concepts missing from {hierarchy_path}: {', '.join(missing)}")

    # Per attribute: distinct answers (case-insensitive), in first-seen order for determinism.
    pools: dict[str, list[str]] = {}
    for attr in attributes:
        uniq: dict[str, str] = {}
        for f in facts:
            ans = f.get(attr)
            if ans:
                uniq.setdefault(ans.strip().casefold(), ans.strip())
        pools[attr] = list(uniq.values())

    rng = random.Random(seed)
    items: list[QAItem] = []
    for f in facts:
        for attr, template in attributes.items():
            answer = (f.get(attr) or "").strip()
            if not answer:
                continue
            pool = [a for a in pools[attr] if a.casefold() != answer.casefold()]
            if len(pool) < n_options - 1:
                raise ValueError(f"attribute {attr!r}: too few distinct answers for {n_options} options")
            options = [answer] + rng.sample(pool, n_options - 1)
            rng.shuffle(options)
            items.append(
                QAItem(
                    id=f"demo-{f['concept_id']}-{attr}",
                    question=template.format(name=f["name"]),
                    options=tuple(options),
                    answer=options.index(answer),
                    source="demo",
                    labels={"concept_id": f["concept_id"], "attribute": attr},
                )
            )
    return items


def _row(item: QAItem) -> dict:
    return {
        "id": item.id,
        "question": item.question,
        "options": list(item.options),
        "answer": item.answer,
        "labels": dict(item.labels),
    }


def write_jsonl(items, path=paths.DEMO_KB) -> Path:
    """Write items as generic JSONL rows, atomically (temp file in the same folder + os.replace)."""
    path = Path(path)
    text = "".join(json.dumps(_row(item), ensure_ascii=False) + "\n" for item in items)
    paths.atomic_write_text(path, text)
    return path


def load(path=paths.DEMO_KB) -> list[QAItem]:
    items: list[QAItem] = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            options = tuple(row["options"])
            answer = int(row["answer"])
            if len(options) < 2 or not 0 <= answer < len(options):
                raise ValueError(f"{path}:{n}: bad options/answer")
            items.append(
                QAItem(
                    id=row["id"],
                    question=row["question"],
                    options=options,
                    answer=answer,
                    source="demo",
                    labels=dict(row.get("labels", {})),
                )
            )
    return items


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Regenerate the demo knowledge base JSONL.")
    ap.add_argument("--facts", default=str(paths.DEMO_FACTS))
    ap.add_argument("--hierarchy", default=str(paths.DEFAULT_HIERARCHY))
    ap.add_argument("--out", default=str(paths.DEMO_KB))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    items = generate(args.facts, args.hierarchy, seed=args.seed)
    out = write_jsonl(items, args.out)
    print(f"wrote {len(items)} items to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
