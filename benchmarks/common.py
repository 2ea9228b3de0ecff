"""What the benchmark scripts share: where they find the repository and the test images, and the reference's chunk.

The test images are ../shared/data/benchmarks, or under LIIF_SHARED where it is set (as the tests read it; on
a lent GPU machine, the carried copy in .gpu_data).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK_SETS = Path(os.environ.get("LIIF_SHARED") or ROOT.parent / "shared").resolve() / "data" / "benchmarks"
REFERENCE_CHUNK = 30000  # queries per call of the reference's batched_predict
