"""Training datasets, by the reference's registry names: a folder dataset wrapped by a sampler."""

from __future__ import annotations

from typing import Any

from liif.data.registry import make_dataset, register_dataset
from liif.data import folders, wrappers  # noqa: F401  (registers the dataset names)

__all__ = ["make_dataset", "register_dataset", "build_dataset"]


def build_dataset(section: dict[str, Any], seed: int = 0) -> Any:
    """The wrapper dataset a config section describes (``dataset`` and ``wrapper`` specs)."""
    base = make_dataset(section["dataset"])
    return make_dataset(section["wrapper"], {"dataset": base, "seed": seed})
