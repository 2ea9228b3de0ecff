"""The interface between a continuous-image model and the renderer: encode, latents of a window, query.

A decoder plugs into the tiled renderer by subclassing ``ImplicitModel``: the renderer reads only the
members defined here, so LIIF, MetaSR or LTE render, tile and self-ensemble the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from liif.normalization import DataNorm
from liif.runtime import query_chunk


@dataclass(frozen=True)
class LatentWindow:
    """A window of the latent grid: the whole grid's ``grid_shape`` (h, w), the window's top-left latent
    ``origin`` and its ``shape`` (rows, cols)."""

    grid_shape: tuple[int, int]
    origin: tuple[int, int]
    shape: tuple[int, int]

    @classmethod
    def whole(cls, shape: tuple[int, int]) -> LatentWindow:
        return cls(tuple(shape), (0, 0), tuple(shape))

    def rows_of(self, iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
        """Flat rows of a (B * rows * cols, D) table for global latent indices shaped (..., B, Q)."""
        rows, cols = self.shape
        local_y, local_x = iy - self.origin[0], ix - self.origin[1]
        # Indices are clamped to the grid, so only a true window can be left; skipping the check on the whole
        # grid saves a device-to-host sync per chunk (and a graph break under torch.compile).
        if self.shape != self.grid_shape and bool((local_y.min() < 0) | (local_y.max() >= rows)
                                                  | (local_x.min() < 0) | (local_x.max() >= cols)):
            raise ValueError("a query reaches a latent outside the window these latents cover")
        batch_offset = torch.arange(iy.shape[-2], device=iy.device).unsqueeze(-1) * (rows * cols)
        return (local_y * cols + local_x + batch_offset).reshape(-1)


class ImplicitModel(nn.Module):
    """An encoder's latent grid decoded at any coordinate; ``forward(inp, coord, cell)`` has the reference signature.

    Subclasses set ``encoder`` and define ``latents`` and ``query``, plus the two reaches the renderer needs to
    cut the work into exact tiles: ``feature_halo`` (features beyond a latent that its own latent reads) and
    ``latent_reach`` (latents beyond the one under a query that the query reads).
    """

    encoder: nn.Module
    feature_halo: int = 0
    latent_reach: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.data_norm = DataNorm()

    @property
    def receptive_radius(self) -> int:
        """How many input pixels beyond a latent's own can change what its decoder reads."""
        return self.encoder.receptive_radius + self.feature_halo

    @property
    def windowed(self) -> bool:
        """Whether ``latents`` can cover a window of the grid (else the renderer encodes whole images)."""
        return True

    def encode(self, inp: torch.Tensor) -> torch.Tensor:
        """The latent feature grid (B, C, h, w) of an input (B, 3, h, w) in the model's space."""
        return self.encoder(inp)

    def latents(self, feat: torch.Tensor, grid_shape: tuple[int, int] | None = None,
                origin: tuple[int, int] = (0, 0)) -> Any:
        """What ``query`` needs from a feature grid, or from a window of it at ``origin`` of ``grid_shape``."""
        raise NotImplementedError

    def query(self, latents: Any, coord: torch.Tensor, cell: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs (B, Q, C) at coordinates (B, Q, 2) with cells (B, Q, 2), in the model's space."""
        raise NotImplementedError

    def query_chunked(self, latents: Any, coord: torch.Tensor, cell: torch.Tensor | None = None,
                      chunk_size: int | None = None) -> torch.Tensor:
        """``query`` over contiguous chunks of at most ``chunk_size`` queries (default: the device's), to bound memory."""
        chunk_size = chunk_size or query_chunk(coord.device)
        if coord.shape[1] <= chunk_size:
            return self.query(latents, coord, cell)
        return torch.cat([self.query(latents, coord[:, start:start + chunk_size],
                                     None if cell is None else cell[:, start:start + chunk_size])
                          for start in range(0, coord.shape[1], chunk_size)], dim=1)

    def forward(self, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor | None = None) -> torch.Tensor:
        """One pass when training (gradients on); in chunks, with bounded memory, in inference."""
        latents = self.latents(self.encode(inp))
        if torch.is_grad_enabled():
            return self.query(latents, coord, cell)
        return self.query_chunked(latents, coord, cell)
