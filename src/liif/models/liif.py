"""The LIIF model (registered as ``liif``): an encoder's latent grid decoded by an MLP at any coordinate.

Two query paths compute one function. ``reference`` follows the reference implementation step by step
(3x3 unfold, nearest ``grid_sample``, diagonal area swap) and documents the math. ``fast`` is the default:
the first MLP layer is linear, so its feature part is applied once per latent code (a 3x3 convolution
when unfolding, 1x1 otherwise), and each query gathers those pre-activations by integer index and adds
its coordinate and cell terms.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from liif.geometry import make_coord
from liif.kernels import check_kernel
from liif.models import int8
from liif.models.implicit import TableLatents, TwoPathModel, table_latents
from liif.registry import make, register

# Boundary ties are pushed to the positive side, and clamping keeps every lookup inside the grid.
EPS_SHIFT = 1e-6
CLAMP = 1 - 1e-6
AREA_EPS = 1e-9
# The local ensemble's (vx, vy) neighbour shifts in the reference's loop order.
ENSEMBLE_SHIFTS = [(-1, -1), (-1, 1), (1, -1), (1, 1)]


def nearest_index(u: torch.Tensor, n: int) -> torch.Tensor:
    """The index ``grid_sample(mode='nearest', align_corners=False)`` picks, in ATen's float order."""
    return torch.round((u + 1) * (n / 2) - 0.5).long()


def blend_weights(areas: list[torch.Tensor], local_ensemble: bool) -> list[torch.Tensor]:
    """Each neighbour's share: the area of the rectangle to the diagonally opposite latent over the total."""
    total = torch.stack(areas).sum(dim=0)
    if local_ensemble:
        areas = areas[::-1]
    return [area / total for area in areas]


def blend_ensemble(preds: list[torch.Tensor], areas: list[torch.Tensor], local_ensemble: bool) -> torch.Tensor:
    """Weight each neighbour's prediction by its ``blend_weights`` share."""
    out = 0
    for pred, weight in zip(preds, blend_weights(areas, local_ensemble)):
        out = out + pred * weight.unsqueeze(-1)
    return out


def reference_neighbours(feat: torch.Tensor, coord: torch.Tensor, shifts: list[tuple[int, int]],
                          eps: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The reference's lookup (spec 4.5): for each (vx, vy) shift, the feature (B, Q, C) of the latent nearest to
    the shifted, clamped query by ``grid_sample`` and the query's offset from its centre in latents (B, Q, 2)."""
    batch, _, h, w = feat.shape
    rx, ry = 2 / h / 2, 2 / w / 2
    feat_coord = make_coord((h, w), flatten=False, device=feat.device).permute(2, 0, 1)
    feat_coord = feat_coord.unsqueeze(0).expand(batch, 2, h, w).to(coord.dtype)
    scale_hw = torch.tensor([h, w], dtype=coord.dtype, device=coord.device)
    found = []
    for vx, vy in shifts:
        shifted = coord.clone()
        shifted[:, :, 0] += vx * rx + eps
        shifted[:, :, 1] += vy * ry + eps
        shifted.clamp_(-CLAMP, CLAMP)
        grid = shifted.flip(-1).unsqueeze(1)
        q_feat = F.grid_sample(feat, grid, mode="nearest", align_corners=False)[:, :, 0, :].permute(0, 2, 1)
        q_coord = F.grid_sample(feat_coord, grid, mode="nearest", align_corners=False)[:, :, 0, :].permute(0, 2, 1)
        found.append((q_feat, (coord - q_coord) * scale_hw))
    return found


def fast_neighbours(coord: torch.Tensor, grid_shape: tuple[int, int], shifts: list[tuple[int, int]],
                    eps: float) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The same lookup by integer index: for each shift, the latent's (row, col) indices (B, Q) and the query's
    offsets from its centre in latents, (rel_y, rel_x), each (B, Q)."""
    h, w = grid_shape
    centres_y = make_coord((h,), device=coord.device).view(-1).to(coord.dtype)
    centres_x = make_coord((w,), device=coord.device).view(-1).to(coord.dtype)
    rx, ry = 2 / h / 2, 2 / w / 2
    found = []
    for vx, vy in shifts:
        iy = nearest_index((coord[..., 0] + (vx * rx + eps)).clamp(-CLAMP, CLAMP), h).clamp(0, h - 1)
        ix = nearest_index((coord[..., 1] + (vy * ry + eps)).clamp(-CLAMP, CLAMP), w).clamp(0, w - 1)
        found.append((iy, ix, (coord[..., 0] - centres_y[iy]) * h, (coord[..., 1] - centres_x[ix]) * w))
    return found


def fused_linear_relu_available(hidden: torch.Tensor) -> bool:
    """Whether oneDNN's Linear+ReLU kernel can serve: CPU float32 inference, not under torch.compile (which
    fuses on its own and cannot lower this op)."""
    return (hidden.device.type == "cpu" and hidden.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling() and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def mlp_tail(hidden: torch.Tensor, linears: list[nn.Linear]) -> torch.Tensor:
    """ReLU then each Linear in turn, from the first layer's pre-activations to the output (which they are when
    the MLP has no hidden layer)."""
    if not linears:
        return hidden
    if int8.active(hidden):
        return int8.int8_mlp_tail(hidden, linears)
    return mlp_layers(F.relu(hidden), linears)


def mlp_layers(hidden: torch.Tensor, linears: list[nn.Linear]) -> torch.Tensor:
    """Each Linear in turn with ReLU between, from the first hidden activation to the output."""
    if fused_linear_relu_available(hidden):
        # Bias and ReLU in the GEMM's epilogue save a pass over memory per layer (about 20% on CPU).
        for linear in linears[:-1]:
            hidden = torch.ops.mkldnn._linear_pointwise(hidden, linear.weight, linear.bias, "relu", [], "")
        return linears[-1](hidden)
    for linear in linears[:-1]:
        hidden = F.relu(linear(hidden))
    return linears[-1](hidden)


@register("liif")
class LIIF(TwoPathModel):
    """Encoder plus MLP decoder with the reference's three switches; ``query_path`` picks the algorithm and
    ``query_kernel`` (``liif.kernels``) what runs the fast one: torch, or a Triton kernel where it serves."""

    query_kernel: str = "torch"

    def __init__(self, encoder_spec: dict[str, Any], imnet_spec: dict[str, Any] | None = None,
                 local_ensemble: bool = True, feat_unfold: bool = True, cell_decode: bool = True) -> None:
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
        self.feature_halo = int(feat_unfold and self.imnet is not None)
        # The local ensemble's nearest latents lie within two latents of the one under the query
        # (half a cell of shift, rounding to the nearest centre, and the tie-breaking eps).
        self.latent_reach = 2

    @property
    def decodes_int8(self) -> bool:
        """Whether precision int8 applies: the fast query path's MLP has hidden layers to run in int8."""
        return self.query_path == "fast" and self.imnet is not None and len(self.imnet.linears) > 1

    @property
    def needs_cell(self) -> bool:
        return self.cell_decode and self.imnet is not None

    def shifts(self) -> tuple[list[tuple[int, int]], float]:
        """The (vx, vy) neighbour shifts in the reference's loop order, and the tie-breaking eps."""
        if self.local_ensemble:
            return ENSEMBLE_SHIFTS, EPS_SHIFT
        return [(0, 0)], 0.0

    def reference_query(self, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor | None) -> torch.Tensor:
        """The reference algorithm (spec section 4.5), kept as the executable statement of the math."""
        if self.imnet is None:
            return F.grid_sample(feat, coord.flip(-1).unsqueeze(1), mode="nearest",
                                 align_corners=False)[:, :, 0, :].permute(0, 2, 1)
        batch, channels, h, w = feat.shape
        if self.feat_unfold:
            feat = F.unfold(feat, 3, padding=1).view(batch, channels * 9, h, w)
        scale_hw = torch.tensor([h, w], dtype=coord.dtype, device=coord.device)
        preds, areas = [], []
        for q_feat, rel_coord in reference_neighbours(feat, coord, *self.shifts()):
            parts = [q_feat, rel_coord]
            if self.cell_decode:
                parts.append(cell * scale_hw)
            preds.append(self.imnet(torch.cat(parts, dim=-1)))
            areas.append(torch.abs(rel_coord[:, :, 0] * rel_coord[:, :, 1]) + AREA_EPS)
        return blend_ensemble(preds, areas, self.local_ensemble)

    def fast_latents(self, feat: torch.Tensor, grid_shape: tuple[int, int], origin: tuple[int, int]) -> TableLatents:
        """First-layer pre-activations per latent code of a feature window (B, C, rows, cols): a 3x3 convolution
        when unfolding, which loses the window's outermost latent on sides inside the grid."""
        if self.imnet is None:
            return table_latents(feat, grid_shape, origin, 0)
        kernel = 3 if self.feat_unfold else 1
        first = self.imnet.linears[0]
        channels = feat.shape[1]
        weight = first.weight[:, :channels * kernel * kernel].reshape(-1, channels, kernel, kernel)
        values = F.conv2d(feat, weight, first.bias, padding=kernel // 2)
        return table_latents(values, grid_shape, origin, self.feature_halo)

    def fast_query(self, latents: TableLatents, coord: torch.Tensor, cell: torch.Tensor | None) -> torch.Tensor:
        """The same function as ``reference_query``, by gathering per-latent first-layer pre-activations."""
        h, w = latents.window.grid_shape
        table = latents.rows
        batch, n_queries = coord.shape[:2]
        if self.imnet is None:
            iy, ix = nearest_index(coord[..., 0], h), nearest_index(coord[..., 1], w)
            inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
            rows = latents.window.rows_of(iy.clamp(0, h - 1), ix.clamp(0, w - 1))
            return table.index_select(0, rows).view(batch, n_queries, -1) * inside.unsqueeze(-1)

        shifts, eps = self.shifts()
        index_y, index_x, rel_terms, areas = [], [], [], []
        for iy, ix, rel_y, rel_x in fast_neighbours(coord, (h, w), shifts, eps):
            terms = [rel_y, rel_x]
            if self.cell_decode:
                terms += [cell[..., 0] * h, cell[..., 1] * w]
            index_y.append(iy)
            index_x.append(ix)
            rel_terms.append(torch.stack(terms, dim=-1))
            areas.append(torch.abs(rel_y * rel_x) + AREA_EPS)

        # All shifts and batch items go through each layer as one matrix multiply.
        rows = latents.window.rows_of(torch.stack(index_y), torch.stack(index_x))
        terms = torch.stack(rel_terms).view(len(shifts), batch * n_queries, -1)
        linears = self.imnet.linears
        extra_weight = linears[0].weight[:, linears[0].weight.shape[1] - terms.shape[-1]:]
        hidden = None
        if self.query_kernel != "torch":
            check_kernel(self.query_kernel, table.device)  # the attribute may have been set directly
            from liif.kernels import triton_query

            if self.query_kernel == "triton" and triton_query.fused_supported(table, terms, linears):
                weights = torch.stack(blend_weights(areas, self.local_ensemble)).view(len(shifts), -1)
                return triton_query.fused_query(table, rows, terms, extra_weight, weights,
                                                linears).view(batch, n_queries, -1)
            if triton_query.first_layer_supported(table, terms) and len(linears) > 1:  # else no ReLU follows
                hidden = mlp_layers(triton_query.first_layer(table, rows, terms, extra_weight), linears[1:])
        if hidden is None:
            hidden = mlp_tail(torch.addmm(table.index_select(0, rows), terms.view(rows.shape[0], -1),
                                          extra_weight.t()), linears[1:])
        preds = hidden.view(len(shifts), batch, n_queries, -1).unbind(0)
        return blend_ensemble(list(preds), areas, self.local_ensemble)
