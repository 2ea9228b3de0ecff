"""Checks of dataset constructor arguments, shared by the folders and the samplers.

They raise ValueError, which ``Registry.make`` turns into a one-line error naming the dataset; a config's
free-form ``args`` are checked here, when the dataset is built, before any run folder exists.
"""

from __future__ import annotations

from typing import Any

from liif.bounds import COUNT, Number

SCALE = Number(float, low=1)


def check_count(name: str, value: Any, optional: bool = True) -> None:
    """A ValueError unless ``value`` is an int >= 1 (or None, when ``optional``)."""
    if value is None and optional:
        return
    if not COUNT.fits(value):
        raise ValueError(f"{name} must be {COUNT.describe()}{' or null' if optional else ''}, got {value!r}")


def check_scales(scale_min: Any, scale_max: Any) -> None:
    """A ValueError unless 1 <= ``scale_min`` <= ``scale_max`` < inf (super-resolution scales)."""
    for name, value in (("scale_min", scale_min), ("scale_max", scale_max)):
        SCALE.check(value, name)
    if scale_max < scale_min:
        raise ValueError(f"scale_max ({scale_max}) must not be below scale_min ({scale_min})")
