"""Typed, range-checked command-line values: ``type=`` callables for argparse.

Every CLI of rsdata uses these, so a bad value reads the same everywhere:
``expected 1 or more, got 0``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"a value in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"above {low:g}" if low_open else f"{low:g} or more"
    if high is not None:
        return f"below {high:g}" if high_open else f"{high:g} or less"
    return "any value"


def bounded(cast: Callable[[str], float], *, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    """A parser of ``cast`` values within [low, high] (ends open where asked)."""
    noun = "a whole number" if cast is int else "a number"
    rule = _interval(low, high, low_open, high_open)

    def parse(text: str) -> float:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"expected {rule}, got {value}")
        return value

    parse.__name__ = f"{noun} ({rule})"
    return parse


positive_int = bounded(int, low=1)
nonnegative_int = bounded(int, low=0)
positive_float = bounded(float, low=0, low_open=True)
number = bounded(float)
