"""Render a LIIF model's continuous image on a pixel grid, whole or a region, in bounded memory."""

from __future__ import annotations

import torch

from liif.models.liif import DEFAULT_CHUNK, LIIF
from liif.tiling import WHOLE_IMAGE, Grid, render_tiles


@torch.no_grad()
def render(model: LIIF, inp: torch.Tensor, size: tuple[int, int], chunk_size: int = DEFAULT_CHUNK,
           ranges: tuple[tuple[float, float], tuple[float, float]] = WHOLE_IMAGE, tile: int = 256,
           self_ensemble: bool = False) -> torch.Tensor:
    """The (B, C, H, W) image of a normalised input (B, 3, h, w) at output ``size`` = (H, W), normalised space.

    ``ranges`` ((y0, y1), (x0, x1)) in [-1, 1] selects a region; the work runs tile by tile (see liif.tiling).
    """
    out = None
    for row, col, block in render_tiles(model, inp, Grid(tuple(size), ranges), tile, chunk_size, self_ensemble):
        if out is None:
            out = block.new_empty(*block.shape[:2], *size)
        out[:, :, row:row + block.shape[2], col:col + block.shape[3]] = block
    return out
