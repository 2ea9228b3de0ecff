"""The LIIF model (registered as ``liif``): an encoder's latent grid decoded by an MLP at any coordinate."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from liif.query import Latents, fast_latents, fast_query, reference_query
from liif.registry import make, register

QUERY_PATHS = ("fast", "reference")
# Queries per chunk: 4 neighbours x 4096 rows x 256 floats = 16 MiB per activation, small enough to stay
# below glibc's mmap threshold (so buffers are reused, not page-faulted anew) and cache-friendly.
DEFAULT_CHUNK = 4096


@register("liif")
class LIIF(nn.Module):
    """Encoder plus implicit decoder; ``forward(inp, coord, cell)`` has the reference signature."""

    def __init__(self, encoder_spec: dict[str, Any], imnet_spec: dict[str, Any] | None = None,
                 local_ensemble: bool = True, feat_unfold: bool = True, cell_decode: bool = True):
        super().__init__()
        self.local_ensemble = local_ensemble
        self.feat_unfold = feat_unfold
        self.cell_decode = cell_decode
        self.encoder = make(encoder_spec)
        if imnet_spec is None:
            self.imnet = None
        else:
            in_dim = self.encoder.out_dim * (9 if feat_unfold else 1) + 2 + (2 if cell_decode else 0)
            self.imnet = make(imnet_spec, args={"in_dim": in_dim})
        self.query_path = "fast"

    @property
    def receptive_radius(self) -> int:
        """How many input pixels beyond a latent's own one can change it, the unfold window included."""
        return self.encoder.receptive_radius + (1 if self.feat_unfold else 0)

    def encode(self, inp: torch.Tensor) -> torch.Tensor:
        """The latent feature grid (B, C, h, w) of a normalised input (B, 3, h, w)."""
        return self.encoder(inp)

    def latents(self, feat: torch.Tensor, grid_shape: tuple[int, int] | None = None,
                origin: tuple[int, int] = (0, 0)) -> Latents:
        """What the query path needs from a feature grid, or from a window of it at ``origin``."""
        if self.query_path not in QUERY_PATHS:
            raise ValueError(f"query_path must be one of {QUERY_PATHS}, not {self.query_path!r}")
        if self.query_path == "reference":
            if grid_shape not in (None, tuple(feat.shape[-2:])):
                raise ValueError("the reference query path works on whole feature grids only")
            return Latents(None, feat, tuple(feat.shape[-2:]), (0, 0), tuple(feat.shape[-2:]))
        return fast_latents(feat, self.imnet, self.feat_unfold, grid_shape, origin)

    def query(self, latents: Latents, coord: torch.Tensor, cell: torch.Tensor | None = None) -> torch.Tensor:
        """Colours (B, Q, 3) at coordinates (B, Q, 2) with cells (B, Q, 2), in the normalised space."""
        check_queries(coord, cell, self.cell_decode and self.imnet is not None)
        if latents.feat is not None:
            return reference_query(latents.feat, coord, cell, self.imnet,
                                   self.local_ensemble, self.feat_unfold, self.cell_decode)
        return fast_query(latents, coord, cell, self.imnet, self.local_ensemble, self.cell_decode)

    def query_chunked(self, latents: Latents, coord: torch.Tensor, cell: torch.Tensor | None = None,
                      chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
        """``query`` over contiguous chunks of at most ``chunk_size`` queries, to bound memory."""
        if coord.shape[1] <= chunk_size:
            return self.query(latents, coord, cell)
        parts = []
        for start in range(0, coord.shape[1], chunk_size):
            stop = start + chunk_size
            parts.append(self.query(latents, coord[:, start:stop], None if cell is None else cell[:, start:stop]))
        return torch.cat(parts, dim=1)

    def forward(self, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor | None = None) -> torch.Tensor:
        return self.query(self.latents(self.encode(inp)), coord, cell)


def check_queries(coord: torch.Tensor, cell: torch.Tensor | None, needs_cell: bool) -> None:
    """Raise a clear ValueError unless coord (and cell, when used) are (B, Q, 2) tensors."""
    if not isinstance(coord, torch.Tensor) or coord.dim() != 3 or coord.shape[-1] != 2:
        raise ValueError(f"coord must be a (B, Q, 2) tensor, got shape {tuple(getattr(coord, 'shape', ()))}")
    if needs_cell:
        if cell is None:
            raise ValueError("this model decodes cells: pass cell, a (B, Q, 2) tensor")
        if not isinstance(cell, torch.Tensor) or cell.shape != coord.shape:
            raise ValueError(f"cell must have the shape of coord {tuple(coord.shape)}, "
                             f"got {tuple(getattr(cell, 'shape', ()))}")
