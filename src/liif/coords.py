"""Continuous image coordinates: pixel centres in [-1, 1], (row, col) order, and cells."""

from __future__ import annotations

from typing import Sequence

import torch


def make_coord(shape: Sequence[int], ranges: Sequence[tuple[float, float]] | None = None,
               flatten: bool = True, device: torch.device | str | None = None) -> torch.Tensor:
    """Pixel-centre coordinates of a grid: ``v0 + r + 2r*i`` with ``r = (v1-v0)/(2n)``, shape (H*W, 2) or (H, W, 2)."""
    axes = []
    for i, n in enumerate(shape):
        v0, v1 = (-1.0, 1.0) if ranges is None else ranges[i]
        r = (v1 - v0) / (2 * n)
        axes.append(v0 + r + (2 * r) * torch.arange(n, device=device).float())
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return grid.view(-1, grid.shape[-1]) if flatten else grid


def make_cell(coord: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The cell (pixel height, pixel width in [-1, 1] units) of an output of ``shape``, one per query."""
    cell = torch.empty_like(coord)
    cell[..., 0] = 2 / shape[0]
    cell[..., 1] = 2 / shape[1]
    return cell


def to_pixel_samples(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates (H*W, 2) and colours (H*W, C) of a (C, H, W) image, in raster order."""
    coord = make_coord(img.shape[-2:], device=img.device)
    rgb = img.reshape(img.shape[0], -1).t()
    return coord, rgb
