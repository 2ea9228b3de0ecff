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


def both_paths_training_step(model: torch.nn.Module, batch: int, side: int, queries: int, seed: int
                             ) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """One L1 training step on random inputs (``batch`` x ``side``², ``queries`` samples at scales in [1, 4]) by
    each query path: the outputs and the gradients of every trainable tensor, by path."""
    torch.manual_seed(seed)
    inp = torch.rand(batch, 3, side, side) * 2 - 1
    scale = torch.empty(batch, 1, 1).uniform_(1, 4)
    coord = torch.rand(batch, queries, 2) * 2 - 1
    cell = (2 / (side * scale)).expand(batch, queries, 2).contiguous()
    target = torch.rand(batch, queries, 3) * 2 - 1
    outputs, grads = {}, {}
    for path in ("reference", "fast"):
        model.zero_grad()
        model.query_path = path
        outputs[path] = model(inp, coord, cell)
        (outputs[path] - target).abs().mean().backward()
        grads[path] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return outputs, grads


@pytest.fixture
def kernel_launches() -> dict[str, int]:
    """How many times each Triton entry point runs from now on (a kernel comparison must not pass by falling
    back to torch): ``liif.kernels.triton_query.LAUNCHES``, zeroed."""
    triton_query = pytest.importorskip("liif.kernels.triton_query", reason="triton is not installed")
    triton_query.LAUNCHES.update(dict.fromkeys(triton_query.LAUNCHES, 0))
    return triton_query.LAUNCHES
