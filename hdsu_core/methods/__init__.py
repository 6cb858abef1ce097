"""Unlearning methods, one file each, behind a small registry (open-unlearning style).

A method is a class with ``name``, ``defaults`` (its settings) and ``run(ctx) -> dict``; it edits
``ctx.model`` in place. ``lora_defaults`` (optional) replace some defaults when it trains LoRA
adapters. Register with ``@register``.
"""

from __future__ import annotations

# Import for registration side effects.
from hdsu_core.methods import grad_ascent, grad_diff, hdsu, masked_baselines, npo, simnpo  # noqa: F401
from hdsu_core.methods.base import (  # noqa: F401
    METHODS,
    UnlearnContext,
    get_method,
    lora_overrides,
    register,
    run_defaults,
)


def available() -> list[str]:
    return sorted(METHODS)
