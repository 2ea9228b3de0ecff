"""What the benchmark scripts share: where they find the repository and the test images, the reference's chunk,
its whole-grid prediction and the best-of-N timing.

The test images are ../shared/data/benchmarks, or under LIIF_SHARED where it is set (as the tests read it; on
a lent GPU machine, the carried copy in .gpu_data).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # gpu_check's parent process imports this module and never torch
    import torch

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK_SETS = Path(os.environ.get("LIIF_SHARED") or ROOT.parent / "shared").resolve() / "data" / "benchmarks"
REFERENCE_CHUNK = 30000  # queries per call of the reference's batched_predict


@dataclass
class Timing:
    """One run's first call and best call in seconds, and what its last call returned."""

    first_s: float
    seconds: float
    result: object


def run_script(main: Callable[[], object]) -> None:
    """Run a script's ``main`` as the liif command runs its own: a LiifError (a missing folder, a device or
    precision this machine lacks) ends it with a one-line error and exit status 2, not a traceback."""
    from liif.errors import LiifError, printable  # here, not above: gpu_check's parent never imports torch

    try:
        code = main()
    except LiifError as error:
        print(printable(f"{Path(sys.argv[0]).name}: error: {error}"), file=sys.stderr)
        code = 2
    sys.exit(code or 0)


def no_sync() -> None:
    """The CPU runs synchronously: nothing to wait for."""


def best_of(runs: dict[str, Callable[[], object]], repeats: int, warmup: int = 0,
            sync: Callable[[], object] = no_sync) -> dict[str, Timing]:
    """Each run called ``warmup`` untimed then ``repeats`` timed rounds, the runs alternating within each round (on a
    shared VM only alternation compares them); ``sync`` waits for a GPU before and after each call."""
    first: dict[str, float] = {}
    best = dict.fromkeys(runs, math.inf)
    results: dict[str, object] = {}
    for round_ in range(warmup + repeats):
        for name, run in runs.items():
            results[name] = None  # the last result is freed before the next call: peak memory stays one call's
            sync()
            start = time.perf_counter()
            results[name] = run()
            sync()
            seconds = time.perf_counter() - start
            first.setdefault(name, seconds)
            if round_ >= warmup:
                best[name] = min(best[name], seconds)
    return {name: Timing(first[name], best[name], results[name]) for name in runs}


def predict(model: torch.nn.Module, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor | None,
            chunk: int | None = None) -> torch.Tensor:
    """Encode, latents and ``query_chunked`` over the whole grid, as the reference's ``batched_predict``: the
    reference path in chunks of REFERENCE_CHUNK unless ``chunk`` says otherwise."""
    if chunk is None and model.query_path == "reference":
        chunk = REFERENCE_CHUNK
    latents = model.latents(model.encode(inp))
    return model.query_chunked(latents, coord, cell, chunk)
