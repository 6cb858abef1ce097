"""Import a branch of ICD-10-CM (PyPI ``simple-icd-10-cm``, shipped data, no network) as a
four-level hierarchy: chapter (L1) -> block (L2) -> category (L3) -> subcategory (L4).

Deeper subcategories (e.g. F43.11 under F43.1) are folded into their L4 ancestor as extra terms,
because the product's hierarchy has exactly four levels.
"""

from __future__ import annotations

import re
import warnings

from hdsu_core.hierarchy import FORMAT, Hierarchy, HierarchyError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the package imports the deprecated pkg_resources
    import simple_icd_10_cm as cm

_STOP = {
    "and",
    "or",
    "of",
    "the",
    "other",
    "unspecified",
    "in",
    "with",
    "without",
    "to",
    "due",
    "not",
    "elsewhere",
    "classified",
    "disorder",
    "disorders",
    "a",
    "an",
    "by",
    "for",
    "as",
}


def _cid(code: str) -> str:
    return "icd10cm." + code.lower()


def _terms(code: str, description: str) -> list[str]:
    # The description itself (minus a trailing "(F40-F48)" range) is the main surface form;
    # inclusion terms from the package are added as synonyms.
    base = re.sub(r"\s*\([A-Z0-9.\-]+\)\s*$", "", description).strip().lower()
    terms = [base, code.lower()]
    try:
        for t in cm.get_inclusion_term(code) or []:
            t = t.strip().lower()
            if t and t not in terms and len(t) < 80:
                terms.append(t)
    except Exception:  # noqa: BLE001 - not every code kind has inclusion terms
        pass
    return terms[:12]


def resolve(code_range: str) -> str:
    """Accept a block ("F40-F48"), a chapter number ("5") or a category ("F41")."""
    code = code_range.strip().upper()
    if cm.is_valid_item(code):
        return code
    raise HierarchyError(f"{code_range!r} is not an ICD-10-CM chapter, block or code")


def import_branch(code_range: str) -> Hierarchy:
    """Build a valid hierarchy for a chapter, block or category and its ancestors up to the chapter."""
    code = resolve(code_range)
    if cm.is_category_or_subcategory(code) and not cm.is_category(code):
        raise HierarchyError(f"{code!r} is a subcategory; import a chapter, block or category")
    # Walk up to the chapter: ancestors give the L1/L2 context for a block or category.
    chain = [code] + list(cm.get_ancestors(code))
    chapter = chain[-1]
    block = next((c for c in chain if cm.is_block(c)), None)
    concepts: list[dict] = []

    def add(c: str, level: int, parent: str | None):
        desc = cm.get_description(c)
        name = re.sub(r"\s*\([A-Z0-9.\-]+\)\s*$", "", desc).strip() or c
        label = f"{c} {name}" if level > 1 else f"Chapter {c}: {name}"
        concepts.append(
            {
                "id": _cid(c),
                "name": label,
                "level": level,
                "parent": _cid(parent) if parent else None,
                "terms": _terms(c, desc),
                "matchers": [],
                "codes": {"icd10cm": c},
                "description": desc,
            }
        )

    add(chapter, 1, None)
    blocks = [block] if block else [b for b in cm.get_children(chapter) if cm.is_block(b)]
    for b in blocks:
        # Nested blocks exist in a few chapters; only their top block is a level-2 concept.
        add(b, 2, chapter)
        cats = [code] if cm.is_category(code) else [c for c in cm.get_children(b) if cm.is_category(c)]
        for cat in cats:
            add(cat, 3, b)
            for sub in cm.get_children(cat):
                add(sub, 4, cat)
                extra = [d for d in cm.get_descendants(sub) if not cm.is_extended_subcategory(d)]
                terms = concepts[-1]["terms"]
                for d in extra:
                    for t in _terms(d, cm.get_description(d))[:1]:
                        if t not in terms and len(terms) < 40:
                            terms.append(t)
    data = {"format": FORMAT, "name": f"ICD-10-CM {code}", "concepts": concepts}
    return Hierarchy.from_dict(data)
