"""Numeric ranges: the one check of "a finite number (or a whole one) within bounds", and its words; and of
"a flag, True or False".

Geometry bounds output sizes with it, the config schema bounds its keys, the datasets their arguments;
each turns a miss into its own error (a LiifError, a config key's error, a ValueError for the registry).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Number:
    """A finite int (``kind=int``) or real number within [``low``, ``high``] (``low`` excluded if ``low_open``)."""

    kind: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def fits(self, value: Any) -> bool:
        # numbers.Integral and Real take numpy's scalars too (an np.int64 from an array's shape is a fine size)
        kinds = numbers.Integral if self.kind is int else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kinds):
            return False
        # an int is finite however large, and math.isfinite cannot take one beyond a float's range
        if not isinstance(value, numbers.Integral) and not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        return above and (self.high is None or value <= self.high)

    def describe(self) -> str:
        text = "an int" if self.kind is int else "a number"
        if self.low is not None and self.high is not None and self.low_open:
            return f"{text} above {self.low} and at most {self.high}"
        if self.low is not None and self.high is not None:
            return f"{text} in [{self.low}, {self.high}]"
        if self.low is not None:
            return f"{text} {'>' if self.low_open else '>='} {self.low}"
        return f"{text} <= {self.high}" if self.high is not None else text

    def check(self, value: Any, what: str, error: type[Exception] = ValueError) -> Any:
        """``value`` as a Python int or float if it fits, else ``error`` saying what ``what`` must be."""
        if not self.fits(value):
            raise error(f"{what} must be {self.describe()}, got {value!r}")
        return int(value) if isinstance(value, numbers.Integral) else float(value)


def flag(value: Any, what: str, error: type[Exception] = ValueError) -> bool:
    """``value`` as a Python bool if it is a bool (numpy's too), else ``error`` saying what ``what`` must be."""
    # As a number refuses True, a flag refuses numbers and strings: "no" and 2 would otherwise read as True.
    if not isinstance(value, (bool, np.bool_)):
        raise error(f"{what} must be True or False, got {value!r}")
    return bool(value)


COUNT = Number(int, low=1)  # how many of something: layers, repeats, samples
POSITIVE = Number(low=0, low_open=True)  # a size, a rate, a scale
THREADS = Number(int, low=1, high=1024)  # torch's CPU threads: it crashes on absurd counts
