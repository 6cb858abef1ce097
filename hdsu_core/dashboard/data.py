"""Datasets and the forget / retain / holdout split as the pages show them: the dataset choices,
item counts per concept, the split table and the collateral-term warnings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from hdsu_core import paths
from hdsu_core.datasets import DatasetError, parse_dataset_spec
from hdsu_core.hierarchy import Hierarchy
from hdsu_core.tagging import rollup_counts


def dataset_choices(shared: Path | None = None) -> dict[str, str]:
    """Label -> dataset spec: the embedded demo KB plus the real benchmarks found under SHARED_DATA."""
    shared = Path(shared) if shared is not None else paths.SHARED_DATA
    out = {"Demo knowledge base (embedded)": "demo"}
    found = [
        ("MedMCQA dev", "medmcqa", shared / "medmcqa" / "dev.jsonl"),
        ("MHQA gold", "mhqa", shared / "mhqa" / "mhqa_gold.csv"),
        ("MHQA-B validation", "mhqa_b", shared / "mhqa" / "mhqa_b_val.csv"),
    ]
    for label, kind, p in found:
        if p.is_file():
            out[label] = f"{kind}:{p}"
    return out


def spec_mtime(spec: str) -> float:
    """Modification time of a dataset spec's file (cache key); 0 when unknown."""
    try:
        _, p = parse_dataset_spec(spec)
        return p.stat().st_mtime
    except (DatasetError, OSError):
        return 0.0


def tag_counts(tags: Mapping[str, Any]) -> dict[str, int]:
    """concept id -> number of items whose primary tag is that concept."""
    out: dict[str, int] = {}
    for t in tags.values():
        cid = getattr(t, "concept_id", None)
        if cid:
            out[cid] = out.get(cid, 0) + 1
    return out


def concept_item_counts(h: Hierarchy, cid: str, counts_by_dataset: Mapping[str, Mapping[str, int]]) -> pd.DataFrame:
    """Per dataset: items tagged exactly with the concept and items anywhere in its subtree."""
    sub = h.subtree(cid)
    rows = []
    for name, counts in counts_by_dataset.items():
        rows.append(
            {
                "dataset": name,
                "tagged here": int(counts.get(cid, 0)),
                "in subtree": int(sum(v for k, v in counts.items() if k in sub)),
            }
        )
    return pd.DataFrame(rows, columns=["dataset", "tagged here", "in subtree"])


def split_table(h: Hierarchy, split) -> pd.DataFrame:
    """One row per selected concept with forget / retain / holdout counts in its subtree."""
    rolled = rollup_counts(h, dict(split.counts))
    rows = []
    for s in split.selected:
        c = rolled.get(s, {"forget": 0, "retain": 0, "holdout": 0})
        rows.append(
            {
                "concept": h.concept(s).name,
                "id": s,
                "level": h.concept(s).level,
                "forget": c["forget"],
                "retain": c["retain"],
                "holdout": c["holdout"],
            }
        )
    return pd.DataFrame(rows, columns=["concept", "id", "level", "forget", "retain", "holdout"])


def split_totals(split) -> dict[str, int]:
    """The headline counts of a split (the metric row above the split table)."""
    s = split.summary()
    return {
        "forget": s["forget"],
        "retain": s["retain"],
        "holdout": s["holdout"],
        "holdout_forget": s["holdout_forget"],
        "untagged": s["untagged"],
    }


def collateral_table(h: Hierarchy, warnings: list[dict]) -> pd.DataFrame:
    """Terms shared by the forget selection and preserved concepts, with concept names."""
    rows = [
        {
            "term": w["term"],
            "forgotten with": ", ".join(h.concept(c).name for c in w["targeted"]),
            "also used by (preserved)": ", ".join(h.concept(c).name for c in w["preserved"]),
        }
        for w in warnings
    ]
    return pd.DataFrame(rows, columns=["term", "forgotten with", "also used by (preserved)"])
