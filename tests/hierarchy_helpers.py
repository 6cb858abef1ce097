"""Test helpers: hierarchies made up for tests (import as ``from hierarchy_helpers import ...``;
pytest puts tests/ on the path)."""

from __future__ import annotations

from hdsu_core.hierarchy import Hierarchy


def synthetic_hierarchy(n: int = 5000, fanout: tuple[int, int, int] = (10, 10, 12)) -> Hierarchy:
    """A valid four-level hierarchy of about ``n`` concepts (for performance tests)."""
    concepts = []
    n1 = max(1, round(n / (1 + fanout[0] * (1 + fanout[1] * (1 + fanout[2])))))
    count = 0
    for a in range(n1):
        r = f"l1_{a}"
        concepts.append({"id": r, "name": f"Root {a}", "level": 1, "parent": None, "terms": [f"root{a}"]})
        count += 1
        for b in range(fanout[0]):
            m = f"{r}.{b}"
            concepts.append({"id": m, "name": f"Domain {a}.{b}", "level": 2, "parent": r, "terms": [f"dom{a}x{b}"]})
            count += 1
            for c in range(fanout[1]):
                s = f"{m}.{c}"
                concepts.append(
                    {"id": s, "name": f"Topic {a}.{b}.{c}", "level": 3, "parent": m, "terms": [f"topic{a}x{b}x{c}"]}
                )
                count += 1
                for d in range(fanout[2]):
                    if count >= n:
                        break
                    concepts.append(
                        {
                            "id": f"{s}.{d}",
                            "name": f"Detail {a}.{b}.{c}.{d}",
                            "level": 4,
                            "parent": s,
                            "terms": [f"detail{a}x{b}x{c}x{d}"],
                        }
                    )
                    count += 1
    return Hierarchy.from_dict({"format": "hdsu-hierarchy/1", "name": "synthetic", "concepts": concepts})
