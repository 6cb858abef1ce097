"""The declared type and range of every method setting: one ``SCHEMA`` beside each method's
``defaults`` (``set(SCHEMA) == set(defaults)``, checked by the tests), checked by
``engine.check_settings`` before a run row exists. A value outside its range is refused with a
message that names the key, the value and what is allowed, instead of a run that fails deep
inside (``mask_fraction=2``: "selected index k out of range") or runs and diverges
(``step_norm=-1``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    """What values a setting takes: ``kind`` int / float / bool / str; for numbers an interval
    (``low`` / ``high``, each closed unless ``*_open``); for text a set of ``choices`` or a
    regular expression."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    regex: bool = False

    def allowed(self) -> str:
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return f"one of {', '.join(self.choices)}" if self.choices else "a regular expression (text)"
        what = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{what} in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '>='} {_num(self.low)}"
        return what

    def problem(self, value: Any) -> str | None:
        """None when ``value`` is allowed, else what is wrong with it (in words)."""
        if self.kind is bool:
            return None if isinstance(value, bool) else "wrong type"
        if self.kind is str:
            if not isinstance(value, str):
                return "wrong type"
            if self.choices and value not in self.choices:
                return "not one of the choices"
            if self.regex:
                try:
                    re.compile(value)
                except re.error as e:
                    return f"not a valid regular expression ({e})"
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "wrong type"
        if self.kind is int and not isinstance(value, int):
            return "not an integer"
        if not math.isfinite(value):
            return "not a finite number"
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return "out of range"
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return "out of range"
        return None


def _num(x: float) -> str:
    return f"{x:g}"


# The kinds of setting the methods have.
def count(low: int = 1) -> Setting:
    """An integer of at least ``low`` (steps, batch sizes, item counts)."""
    return Setting(int, low=low)


POSITIVE = Setting(float, low=0, low_open=True)  # a length, a rate, a temperature, a budget: > 0
NON_NEGATIVE = Setting(float, low=0)  # a weight or a margin: 0 turns the term off
FRACTION = Setting(float, low=0, high=1, low_open=True)  # a share of something: (0, 1]
QUANTILE = Setting(float, low=0, high=1)  # [0, 1]
FLAG = Setting(bool)
REGEX = Setting(str, regex=True)


def choice(*options: str) -> Setting:
    return Setting(str, choices=tuple(options))


def check_value(method: str, key: str, value: Any, spec: Setting) -> None:
    """Raise ``ValueError`` (one line: key, value, what is allowed) when ``value`` is refused."""
    problem = spec.problem(value)
    if problem is not None:
        shown = f"{value!r}" if not isinstance(value, str) else f"{value!r} (text)"
        raise ValueError(
            f"setting {key}={shown} refused for method {method!r}: {problem}; {key} must be {spec.allowed()}"
        )
