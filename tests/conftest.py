"""Shared test helpers: where ../shared lives, and a clean skip when a shared file is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# LIIF_SHARED points elsewhere when ../shared is absent (on the GPU machine: a copy in .gpu_data, same layout).
SHARED = Path(os.environ.get("LIIF_SHARED") or ROOT.parent / "shared").resolve()
REFERENCE = SHARED / "fixtures" / "reference"
BENCHMARKS = SHARED / "data" / "benchmarks"

torch.set_num_threads(2)


def shared_file(path: Path) -> Path:
    """``path``, or a skip naming it when the shared material is not beside the clone."""
    if not path.exists():
        pytest.skip(f"shared material absent: {path}")
    return path
