"""Training datasets, by the reference's registry names: a folder dataset wrapped by a sampler."""

from __future__ import annotations

from typing import Any

from liif.data import folders, wrappers  # noqa: F401  (registers the dataset names)
from liif.registry import DATASETS

__all__ = ["build_dataset"]


def build_dataset(section: dict[str, Any], seed: int = 0) -> Any:
    """The wrapper dataset a config section describes (``dataset`` and ``wrapper`` specs)."""
    base = DATASETS.make(section["dataset"])
    return DATASETS.make(section["wrapper"], {"dataset": base, "seed": seed})
