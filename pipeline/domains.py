"""Documented domains of configurable numbers, written into constructor signatures.

A constructor says what it accepts with an annotated type, e.g. ``frame_stride: PositiveInt = 1``
or ``open_timeout_s: PositiveFloat = 5.0``; the config validator (`pipeline.config.check_arguments`)
reads the annotation and reports a value outside the domain as one line naming the key. Every float
of a configuration must be finite (NaN and infinities are refused everywhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated


@dataclass(frozen=True)
class Range:
    """The allowed interval of a number: ``low``/``high`` inclusive unless ``low_open``; None = unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"<= {self.high:g}" if self.high is not None else "any"


PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, low_open=True)]
NonNegativeFloat = Annotated[float, Range(0)]
UnitFloat = Annotated[float, Range(0, 1)]
