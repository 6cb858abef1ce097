""" "Is it really gone?": attacks on an unlearned model, one small module each, behind a registry
like the methods' (docs/method.md, "Is it really gone?").

- ``relearn.py``       relearning on half of the forget items, and on retained items only;
- ``quantization.py``  INT8 and 4-bit weight quantization (torchao), changes against the 4-bit bins;
- ``format_shift.py``  shuffled options, other templates, option letters, few-shot, rewritten questions;
- ``membership.py``    Min-K%++, zlib and reference-model membership attacks.

Their targets and PASS / FAIL rows are ``hdsu_core.attack_targets`` (no torch: the report reads them).

An attack works on copies: the model a run hands back is never changed by it. Its results are
run metrics (``attack_<name>_...``, ``mia_auc_<attack>...``), plus ``attack_<name>_seconds``.
"""

from __future__ import annotations

import time
from typing import Iterable

# Import for registration side effects.
from hdsu_core.attacks import format_shift, membership, quantization, relearn  # noqa: F401
from hdsu_core.attacks.base import ATTACKS, AttackContext, get_attack, recovery, register  # noqa: F401

# The order they run and are shown in.
ORDER = ("relearn", "quant", "format", "mia")


def available() -> list[str]:
    return [n for n in ORDER if n in ATTACKS] + sorted(set(ATTACKS) - set(ORDER))


def parse_attacks(spec: str | Iterable[str] | None) -> list[str]:
    """``relearn,quant`` / ``all`` / ``none`` (or a list) -> the attack names, in the order they run.
    An unknown name is refused with the known ones."""
    names = spec.split(",") if isinstance(spec, str) else list(spec or [])
    names = [n.strip() for n in names if n and n.strip() and n.strip() != "none"]
    if "all" in names:
        return available()
    unknown = sorted(set(names) - set(ATTACKS))
    if unknown:
        raise ValueError(f"unknown attack(s) {', '.join(unknown)}; available: {', '.join(available())} (or all)")
    return [n for n in available() if n in names]


def run_attacks(names: Iterable[str], ctx: AttackContext) -> dict[str, float]:
    """Every named attack on ``ctx``: their metrics, each attack's cost in ``attack_<name>_seconds``
    and the total in ``attack_seconds``."""
    out: dict[str, float] = {}
    total = 0.0
    for name in parse_attacks(list(names)):
        t0 = time.time()
        out.update(get_attack(name).run(ctx))
        out[f"attack_{name}_seconds"] = time.time() - t0
        total += out[f"attack_{name}_seconds"]
    out["attack_seconds"] = total
    return out
