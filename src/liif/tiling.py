"""Bounded-memory rendering: encode overlapping input tiles, query each tile's output pixels, yield blocks.

The latent grid is cut into tiles of ``tile`` x ``tile`` latents. An output pixel belongs to the tile
holding the latent under its centre; its local ensemble reaches at most ``ENSEMBLE_REACH`` latents
further, so each tile builds ``Latents`` for itself plus that border, and encodes the input with a
margin of ``model.receptive_radius`` pixels around them, which makes every latent it uses exactly the
latent of the whole image. Memory then depends on the tile and the block, never on the image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch

from liif.coords import make_coord
from liif.models.liif import DEFAULT_CHUNK, LIIF

# The local ensemble's nearest latents lie within two latents of the one under the query
# (half a cell of shift, rounding to the nearest centre, and the 1e-6 tie-breaking eps).
ENSEMBLE_REACH = 2
WHOLE_IMAGE = ((-1.0, 1.0), (-1.0, 1.0))


@dataclass(frozen=True)
class Grid:
    """Output pixels: ``size`` (H, W) pixel centres spread over ``ranges`` ((y0, y1), (x0, x1)) of [-1, 1]^2."""

    size: tuple[int, int]
    ranges: tuple[tuple[float, float], tuple[float, float]] = WHOLE_IMAGE

    def axis(self, dim: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Pixel-centre coordinates along ``dim`` (0: rows, 1: columns)."""
        return make_coord((self.size[dim],), ranges=[self.ranges[dim]], device=device).view(-1)

    def cell(self) -> tuple[float, float]:
        """Pixel height and width in [-1, 1] units: the cell always follows the output pixel size."""
        return tuple((r[1] - r[0]) / n for r, n in zip(self.ranges, self.size))


@dataclass(frozen=True)
class Symmetry:
    """One of the 8 flips/transposes of the plane: flip rows, flip columns, then swap the axes."""

    flip_y: bool = False
    flip_x: bool = False
    transpose: bool = False

    def image(self, x: torch.Tensor) -> torch.Tensor:
        dims = [d for d, flip in ((-2, self.flip_y), (-1, self.flip_x)) if flip]
        x = x.flip(dims) if dims else x
        return x.transpose(-2, -1) if self.transpose else x

    def window(self, rows: tuple[int, int], cols: tuple[int, int], shape: tuple[int, int]
               ) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """Where the window ``rows`` x ``cols`` of a grid of ``shape`` lands: (rows, cols, shape)."""
        if self.flip_y:
            rows = (shape[0] - rows[1], shape[0] - rows[0])
        if self.flip_x:
            cols = (shape[1] - cols[1], shape[1] - cols[0])
        return (cols, rows, shape[::-1]) if self.transpose else (rows, cols, shape)

    def coord(self, coord: torch.Tensor) -> torch.Tensor:
        """(row, col) coordinates (..., 2) mapped the way ``image`` maps pixels."""
        sign = torch.tensor([-1.0 if self.flip_y else 1.0, -1.0 if self.flip_x else 1.0],
                            dtype=coord.dtype, device=coord.device)
        coord = coord * sign
        return coord.flip(-1) if self.transpose else coord

    def cell(self, cell: torch.Tensor) -> torch.Tensor:
        return cell.flip(-1) if self.transpose else cell


IDENTITY = (Symmetry(),)
ALL_SYMMETRIES = tuple(Symmetry(fy, fx, t) for t in (False, True) for fy in (False, True) for fx in (False, True))


def latent_bins(axis: torch.Tensor, n: int) -> torch.Tensor:
    """The latent (of ``n``) under each output pixel centre of ``axis``."""
    return ((axis.double() + 1) * (n / 2)).floor().long().clamp(0, n - 1)


def tile_spans(bins: torch.Tensor, tile: int) -> list[tuple[int, int, int, int]]:
    """(first latent, end latent, first output pixel, end output pixel) of each non-empty tile along one axis."""
    spans = []
    owner = bins // tile
    for k in torch.unique_consecutive(owner).tolist():
        pixels = torch.nonzero(owner == k).view(-1)
        spans.append((k * tile, (k + 1) * tile, int(pixels[0]), int(pixels[-1]) + 1))
    return spans


def pick_tile(model: LIIF, grid: Grid, latent_shape: tuple[int, int], tile: int, block_pixels: int) -> int:
    """A tile side, in latents, whose output block holds at most ``block_pixels`` pixels (the reference path:
    the whole grid, since it cannot query windows)."""
    if model.query_path == "reference":
        return max(latent_shape)
    density = 1.0
    for dim in (0, 1):
        span = latent_shape[dim] * (grid.ranges[dim][1] - grid.ranges[dim][0]) / 2
        density *= grid.size[dim] / span
    return max(1, min(tile, int(math.sqrt(block_pixels / density))))


def clip(lo: int, hi: int, n: int) -> tuple[int, int]:
    """[lo, hi) cut to [0, n)."""
    return max(lo, 0), min(hi, n)


@torch.no_grad()
def render_tiles(model: LIIF, inp: torch.Tensor, grid: Grid, tile: int = 256, chunk_size: int = DEFAULT_CHUNK,
                 self_ensemble: bool = False, block_pixels: int = 1 << 22
                 ) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield (row, col, block) where ``block`` (B, 3, hb, wb) is the normalised-space output of ``grid`` at
    (row, col), for a normalised input (B, 3, h, w); blocks cover the grid once, tile by tile."""
    h, w = inp.shape[-2:]
    side = pick_tile(model, grid, (h, w), tile, block_pixels)
    axes = [grid.axis(dim, inp.device) for dim in (0, 1)]
    row_spans = tile_spans(latent_bins(axes[0], h), side)
    col_spans = tile_spans(latent_bins(axes[1], w), side)
    cell_hw = torch.tensor(grid.cell(), device=inp.device)
    symmetries = ALL_SYMMETRIES if self_ensemble else IDENTITY
    for r0, r1, y0, y1 in row_spans:
        for c0, c1, x0, x1 in col_spans:
            latent_win = (clip(r0 - ENSEMBLE_REACH, r1 + ENSEMBLE_REACH, h),
                          clip(c0 - ENSEMBLE_REACH, c1 + ENSEMBLE_REACH, w))
            coord = torch.stack(torch.meshgrid(axes[0][y0:y1], axes[1][x0:x1], indexing="ij"), dim=-1)
            block = sum(render_window(model, inp, latent_win, coord, cell_hw, chunk_size, symmetry)
                        for symmetry in symmetries) / len(symmetries)
            yield y0, x0, block


def render_window(model: LIIF, inp: torch.Tensor, latent_win: tuple[tuple[int, int], tuple[int, int]],
                  coord: torch.Tensor, cell_hw: torch.Tensor, chunk_size: int, symmetry: Symmetry) -> torch.Tensor:
    """The (B, 3, hb, wb) output at ``coord`` (hb, wb, 2), from latents of ``latent_win`` of ``symmetry(inp)``."""
    shape = tuple(inp.shape[-2:])
    unfold = 1 if model.feat_unfold else 0
    radius = model.receptive_radius
    (r0, r1), (c0, c1) = latent_win
    feat_rows, feat_cols = clip(r0 - unfold, r1 + unfold, shape[0]), clip(c0 - unfold, c1 + unfold, shape[1])
    in_rows, in_cols = clip(r0 - radius, r1 + radius, shape[0]), clip(c0 - radius, c1 + radius, shape[1])
    window = inp[:, :, in_rows[0]:in_rows[1], in_cols[0]:in_cols[1]]
    in_rows, in_cols, _ = symmetry.window(in_rows, in_cols, shape)
    feat_rows, feat_cols, grid_shape = symmetry.window(feat_rows, feat_cols, shape)
    feat = model.encode(symmetry.image(window))
    feat = feat[:, :, feat_rows[0] - in_rows[0]:feat_rows[1] - in_rows[0],
                feat_cols[0] - in_cols[0]:feat_cols[1] - in_cols[0]]
    latents = model.latents(feat, grid_shape=grid_shape, origin=(feat_rows[0], feat_cols[0]))

    batch = inp.shape[0]
    rows, cols = coord.shape[:2]
    coord = symmetry.coord(coord.reshape(1, -1, 2)).expand(batch, -1, -1)
    cell = symmetry.cell(cell_hw).view(1, 1, 2).expand_as(coord)
    pred = model.query_chunked(latents, coord, cell, chunk_size)
    return pred.view(batch, rows, cols, -1).permute(0, 3, 1, 2)
