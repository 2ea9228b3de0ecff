"""The Local Texture Estimator (registered as ``lte``; Lee and Jin, CVPR 2022, jaewon-lee-b/lte models/lte.py).

Per latent, two 3x3 convolutions of the encoder's features estimate 256 amplitudes and 128 two-dimensional
frequencies; per query and ensemble neighbour, the phase is a linear map of the cell, and the MLP decodes
amplitude x [cos(pi theta), sin(pi theta)] with theta = frequency . offset + phase (spec 7.4). LIIF's local
ensemble blends the four neighbours, and the input, sampled bilinearly at the query, is added as a skip.

The input rides along as the last three channels of the latent grid (``encode``), so that a window of the grid
carries the pixels its skip reads and tiled renders stay exact without anything beyond the ``ImplicitModel``
interface. ``reference`` follows the reference step by step (``grid_sample``, nearest then bilinear); ``fast``
(the default) gathers rows of a per-latent table (amplitudes, frequencies, input pixel) by integer index and
runs the four neighbours as one batch through each layer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from liif.errors import LiifError
from liif.models.implicit import LatentWindow, TableLatents, TwoPathModel, table_latents
from liif.models.liif import (AREA_EPS, ENSEMBLE_SHIFTS, EPS_SHIFT, blend_ensemble, fast_neighbours, mlp_tail,
                              reference_neighbours)
from liif.registry import make, register

IMAGE_CHANNELS = 3


def basis(freq: torch.Tensor, rel_coord: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """[cos(pi theta), sin(pi theta)] (..., 2K) for frequencies (..., 2K) read as K (y, x) pairs, the offsets
    (..., 2) and the phases (..., K): theta_k = f_k . offset + phase_k."""
    pairs = freq.unflatten(-1, (-1, 2))
    theta = pairs[..., 0] * rel_coord[..., :1] + pairs[..., 1] * rel_coord[..., 1:] + phase
    return torch.cat([torch.cos(math.pi * theta), torch.sin(math.pi * theta)], dim=-1)


def bilinear_border(values: torch.Tensor, window: LatentWindow, coord: torch.Tensor) -> torch.Tensor:
    """``grid_sample(bilinear, padding_mode='border', align_corners=False)`` of a (B * rows * cols, C) table of
    pixels over ``window`` at coordinates (B, Q, 2): the four neighbouring pixels gathered by index."""
    corners, weights = [], []
    for dim, n in enumerate(window.grid_shape):
        source = (((coord[..., dim] + 1) * n - 1) / 2).clamp(0, n - 1)
        low = source.floor()
        high = low + 1
        corners.append((low.long(), high.long().clamp(max=n - 1)))
        weights.append((high - source, source - low))
    out = 0
    for (iy, wy) in zip(corners[0], weights[0]):
        for (ix, wx) in zip(corners[1], weights[1]):
            out = out + values.index_select(0, window.rows_of(iy, ix)).view(*coord.shape[:2], -1) \
                * (wy * wx).unsqueeze(-1)
    return out


@register("lte")
class LTE(TwoPathModel):
    """Encoder, amplitude/frequency/phase estimators and an MLP decoder, with a bilinear skip of the input."""

    test_cell_clip = 4.0  # LTE's test.py and demo.py clip the cell at x4 (the training range's top)

    def __init__(self, encoder_spec: dict[str, Any], imnet_spec: dict[str, Any] | None = None,
                 hidden_dim: int = 256) -> None:
        super().__init__()
        if imnet_spec is None:
            raise ValueError("LTE needs an imnet_spec (its MLP decoder)")
        if hidden_dim % 2:
            raise ValueError(f"hidden_dim must be even (cosines and sines of hidden_dim / 2 phases), got {hidden_dim}")
        self.encoder = make(encoder_spec)
        self.coef = nn.Conv2d(self.encoder.out_dim, hidden_dim, 3, padding=1)
        self.freq = nn.Conv2d(self.encoder.out_dim, hidden_dim, 3, padding=1)
        self.phase = nn.Linear(2, hidden_dim // 2, bias=False)
        self.imnet = make(imnet_spec, args={"in_dim": hidden_dim})
        self.hidden_dim = hidden_dim
        self.feature_halo = 1  # the estimators' 3x3 convolutions
        self.latent_reach = 2  # LIIF's local ensemble; the skip's bilinear neighbours lie within one latent

    def encode(self, inp: torch.Tensor) -> torch.Tensor:
        """The encoder's features with the input itself as three more channels (the skip reads it)."""
        inp = self.checked_input(inp)
        feat = self.run_encoder(inp)
        if feat.shape[-2:] != inp.shape[-2:]:
            raise LiifError(f"LTE needs an encoder that keeps the input's size (no_upsampling), got "
                            f"{tuple(feat.shape[-2:])} from {tuple(inp.shape[-2:])}")
        return torch.cat([feat, inp], dim=1)

    def reference_query(self, packed: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """The reference algorithm (spec 7.4)."""
        feat, inp = packed[:, :-IMAGE_CHANNELS], packed[:, -IMAGE_CHANNELS:]
        estimates = torch.cat([self.coef(feat), self.freq(feat)], dim=1)
        h, w = feat.shape[-2:]
        rel_cell = cell * torch.tensor([h, w], dtype=cell.dtype, device=cell.device)
        phase = self.phase(rel_cell)
        preds, areas = [], []
        for q_estimates, rel_coord in reference_neighbours(estimates, coord, ENSEMBLE_SHIFTS, EPS_SHIFT):
            q_coef, q_freq = q_estimates.split(self.hidden_dim, dim=-1)
            preds.append(self.imnet(q_coef * basis(q_freq, rel_coord, phase)))
            areas.append(torch.abs(rel_coord[:, :, 0] * rel_coord[:, :, 1]) + AREA_EPS)
        skip = F.grid_sample(inp, coord.flip(-1).unsqueeze(1), mode="bilinear", padding_mode="border",
                             align_corners=False)[:, :, 0, :].permute(0, 2, 1)
        return blend_ensemble(preds, areas, True) + skip

    def fast_latents(self, packed: torch.Tensor, grid_shape: tuple[int, int], origin: tuple[int, int]) -> TableLatents:
        """Per latent: amplitudes, frequencies and the input pixel; the estimators' convolutions lose the
        window's outermost latent on sides inside the grid."""
        feat, inp = packed[:, :-IMAGE_CHANNELS], packed[:, -IMAGE_CHANNELS:]
        values = torch.cat([self.coef(feat), self.freq(feat), inp], dim=1)
        return table_latents(values, grid_shape, origin, self.feature_halo)

    def fast_query(self, latents: TableLatents, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """The same function as ``reference_query``: the four neighbours gathered by index, one batch per layer."""
        window = latents.window
        h, w = window.grid_shape
        table = latents.rows
        batch, n_queries = coord.shape[:2]
        found = fast_neighbours(coord, (h, w), ENSEMBLE_SHIFTS, EPS_SHIFT)
        rows = window.rows_of(torch.stack([f[0] for f in found]), torch.stack([f[1] for f in found]))
        estimates = table[:, :2 * self.hidden_dim].index_select(0, rows)
        q_coef, q_freq = estimates.split(self.hidden_dim, dim=-1)
        rel_coord = torch.stack([torch.stack([f[2], f[3]], dim=-1) for f in found]).view(-1, 2)
        rel_cell = cell * torch.tensor([h, w], dtype=cell.dtype, device=cell.device)
        phase = self.phase(rel_cell).reshape(1, batch * n_queries, -1).expand(len(found), -1, -1)
        phase = phase.reshape(rows.shape[0], -1)
        linears = self.imnet.linears
        hidden = mlp_tail(linears[0](q_coef * basis(q_freq, rel_coord, phase)), linears[1:])
        preds = hidden.view(len(found), batch, n_queries, -1).unbind(0)
        areas = [torch.abs(f[2] * f[3]) + AREA_EPS for f in found]
        skip = bilinear_border(table[:, 2 * self.hidden_dim:], window, coord)
        return blend_ensemble(list(preds), areas, True) + skip
