"""Progress reporting: one callback type shared by training, runs, the worker and the CLI."""

from __future__ import annotations

import sys
from typing import Callable

# progress(phase, fraction done 0..1, message)
ProgressFn = Callable[[str, float, str], None]


def no_progress(phase: str, frac: float, msg: str) -> None:
    """The default callback: report nothing."""


def stderr_progress(phase: str, frac: float, msg: str) -> None:
    print(f"[{phase}] {frac * 100:5.1f}% {msg}", file=sys.stderr, flush=True)
