"""Checks of dataset constructor arguments, shared by the folders and the samplers.

They raise ValueError, which ``Registry.make`` turns into a one-line error naming the dataset; a config's
free-form ``args`` are checked here, when the dataset is built, before any run folder exists.
"""

from __future__ import annotations

import math
from typing import Any


def check_count(name: str, value: Any, optional: bool = True) -> None:
    """A ValueError unless ``value`` is an int >= 1 (or None, when ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1{' or null' if optional else ''}, got {value!r}")


def check_scales(scale_min: Any, scale_max: Any) -> None:
    """A ValueError unless 1 <= ``scale_min`` <= ``scale_max`` < inf (super-resolution scales)."""
    for name, value in (("scale_min", scale_min), ("scale_max", scale_max)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value < math.inf:
            raise ValueError(f"{name} must be a finite number >= 1, got {value!r}")
    if scale_max < scale_min:
        raise ValueError(f"scale_max ({scale_max}) must not be below scale_min ({scale_min})")
