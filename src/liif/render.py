"""Render a LIIF model's continuous image on a pixel grid: encode, query in chunks, reshape."""

from __future__ import annotations

import torch

from liif.coords import make_cell, make_coord
from liif.models.liif import LIIF


@torch.no_grad()
def render(model: LIIF, inp: torch.Tensor, size: tuple[int, int], chunk_size: int = 16384) -> torch.Tensor:
    """The (B, 3, H, W) image of a normalised input (B, 3, h, w) at output ``size`` = (H, W), normalised space."""
    batch = inp.shape[0]
    latents = model.latents(model.encode(inp))
    coord = make_coord(size, device=inp.device).unsqueeze(0).expand(batch, -1, -1)
    cell = make_cell(coord, size)
    pred = model.query_chunked(latents, coord, cell, chunk_size)
    return pred.view(batch, size[0], size[1], -1).permute(0, 3, 1, 2)
