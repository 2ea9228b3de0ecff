"""Training datasets, by the reference's registry names: a folder dataset wrapped by a sampler."""

from __future__ import annotations

from typing import Any

from liif.data import folders, wrappers  # noqa: F401  (registers the dataset names)
from liif.errors import LiifError
from liif.registry import DATASETS
from liif.runtime import available_memory

__all__ = ["build_dataset"]

# Memory per sample of an epoch: the wrapper's index list and the epoch's shuffled order are lists of Python
# ints (about 36 bytes an entry each), with the order's int64 tensor beside it while it is made.
BYTES_PER_SAMPLE = 80


def build_dataset(section: dict[str, Any], seed: int = 0, progress: bool = False, copies: int = 1) -> Any:
    """The wrapper dataset a config section describes (``dataset`` and ``wrapper`` specs); ``progress``: a bar
    while its folders are read, ``copies`` the processes of this machine that build it too (each holds its own
    ``in_memory`` cache), and ``seed`` the wrapper's draws, where they take them (a dataset registered beside the
    built-in ones may not)."""
    base = DATASETS.make(section["dataset"], optional={"progress": progress, "copies": copies})
    check_epoch_fits(len(base))
    return DATASETS.make(section["wrapper"], {"dataset": base}, optional={"seed": seed})


def check_epoch_fits(samples: int) -> None:
    """Refuse an epoch whose sample order would not fit in the memory available (a nonsense ``repeat``)."""
    needed, free = samples * BYTES_PER_SAMPLE, available_memory()
    if free is not None and needed > free:
        raise LiifError(f"an epoch of {samples:,} samples (images x repeat) needs {needed / 2**30:.1f} GiB for its "
                        f"order, only {free / 2**30:.1f} GiB is available; lower repeat")
