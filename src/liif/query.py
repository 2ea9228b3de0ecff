"""The LIIF query: colour at continuous coordinates from the nearest latent codes.

Two paths compute one function. ``reference_query`` follows the reference implementation step by
step (3x3 unfold, nearest ``grid_sample``, diagonal area swap) and documents the math. ``fast_query``
is the default: the first MLP layer is linear, so its feature part is applied once per latent code
(a 3x3 convolution when unfolding, 1x1 otherwise), and each query gathers those pre-activations by
integer index and adds its coordinate and cell terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from liif.coords import make_coord

# Boundary ties are pushed to the positive side, and clamping keeps every lookup inside the grid.
EPS_SHIFT = 1e-6
CLAMP = 1 - 1e-6
AREA_EPS = 1e-9


@dataclass
class Latents:
    """Per-latent values for a window of the latent grid.

    ``values`` is (B, rows*cols, D), row-major over the window. For the fast path it holds the
    first-layer pre-activations; for a model without decoder, the features; for the reference
    path, ``feat`` holds the feature map itself. ``grid_shape`` is the whole grid's (h, w) and
    ``origin`` the window's top-left latent, so a window answers queries exactly like the whole.
    """

    values: torch.Tensor | None
    feat: torch.Tensor | None
    grid_shape: tuple[int, int]
    origin: tuple[int, int]
    window_shape: tuple[int, int]


def ensemble_shifts(local_ensemble: bool) -> tuple[list[tuple[int, int]], float]:
    """The (vy, vx) neighbour shifts in the reference's loop order, and the tie-breaking eps."""
    if local_ensemble:
        return [(-1, -1), (-1, 1), (1, -1), (1, 1)], EPS_SHIFT
    return [(0, 0)], 0.0


def nearest_index(u: torch.Tensor, n: int) -> torch.Tensor:
    """The index ``grid_sample(mode='nearest', align_corners=False)`` picks, in ATen's float order."""
    return torch.round((u + 1) * (n / 2) - 0.5).long()


def blend_ensemble(preds: list[torch.Tensor], areas: list[torch.Tensor], local_ensemble: bool) -> torch.Tensor:
    """Weight each neighbour's prediction by the area of the rectangle to the diagonally opposite latent."""
    total = torch.stack(areas).sum(dim=0)
    if local_ensemble:
        areas = areas[::-1]
    out = 0
    for pred, area in zip(preds, areas):
        out = out + pred * (area / total).unsqueeze(-1)
    return out


def reference_query(feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor | None, imnet,
                    local_ensemble: bool, feat_unfold: bool, cell_decode: bool) -> torch.Tensor:
    """The reference algorithm (spec section 4.5), kept as the executable statement of the math."""
    if imnet is None:
        return F.grid_sample(feat, coord.flip(-1).unsqueeze(1), mode="nearest",
                             align_corners=False)[:, :, 0, :].permute(0, 2, 1)
    batch, channels, h, w = feat.shape
    if feat_unfold:
        feat = F.unfold(feat, 3, padding=1).view(batch, channels * 9, h, w)
    shifts, eps = ensemble_shifts(local_ensemble)
    rx, ry = 2 / h / 2, 2 / w / 2
    feat_coord = make_coord((h, w), flatten=False, device=feat.device).permute(2, 0, 1)
    feat_coord = feat_coord.unsqueeze(0).expand(batch, 2, h, w).to(feat.dtype)
    scale_hw = torch.tensor([h, w], dtype=coord.dtype, device=coord.device)
    preds, areas = [], []
    for vx, vy in shifts:
        shifted = coord.clone()
        shifted[:, :, 0] += vx * rx + eps
        shifted[:, :, 1] += vy * ry + eps
        shifted.clamp_(-CLAMP, CLAMP)
        grid = shifted.flip(-1).unsqueeze(1)
        q_feat = F.grid_sample(feat, grid, mode="nearest", align_corners=False)[:, :, 0, :].permute(0, 2, 1)
        q_coord = F.grid_sample(feat_coord, grid, mode="nearest", align_corners=False)[:, :, 0, :].permute(0, 2, 1)
        rel_coord = (coord - q_coord) * scale_hw
        parts = [q_feat, rel_coord]
        if cell_decode:
            parts.append(cell * scale_hw)
        preds.append(imnet(torch.cat(parts, dim=-1)))
        areas.append(torch.abs(rel_coord[:, :, 0] * rel_coord[:, :, 1]) + AREA_EPS)
    return blend_ensemble(preds, areas, local_ensemble)


def fast_latents(feat: torch.Tensor, imnet, feat_unfold: bool, grid_shape: tuple[int, int] | None = None,
                 origin: tuple[int, int] = (0, 0)) -> Latents:
    """First-layer pre-activations per latent code of a feature window (B, C, rows, cols).

    A window that does not touch the grid's border on some side loses its outermost latent there,
    because the 3x3 unfolding needs the neighbour beyond it.
    """
    batch, channels, rows, cols = feat.shape
    grid_shape = grid_shape or (rows, cols)
    if imnet is None:
        values = feat
    else:
        kernel = 3 if feat_unfold else 1
        first = imnet.linears[0]
        weight = first.weight[:, :channels * kernel * kernel].reshape(-1, channels, kernel, kernel)
        values = F.conv2d(feat, weight, first.bias, padding=kernel // 2)
    top, left = origin
    halo = int(feat_unfold and imnet is not None)
    trim_top, trim_left = halo * (top > 0), halo * (left > 0)
    trim_bottom, trim_right = halo * (top + rows < grid_shape[0]), halo * (left + cols < grid_shape[1])
    values = values[:, :, trim_top:rows - trim_bottom, trim_left:cols - trim_right]
    window_shape = (values.shape[2], values.shape[3])
    values = values.flatten(2).transpose(1, 2).contiguous()
    return Latents(values, None, grid_shape, (top + trim_top, left + trim_left), window_shape)


def window_rows(latents: Latents, iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
    """Flat row numbers into ``latents.values`` viewed as (B*rows*cols, D), for global indices shaped (..., B, Q)."""
    rows, cols = latents.window_shape
    local_y = iy - latents.origin[0]
    local_x = ix - latents.origin[1]
    if bool((local_y.min() < 0) | (local_y.max() >= rows) | (local_x.min() < 0) | (local_x.max() >= cols)):
        raise ValueError("a query reaches a latent outside the window these latents cover")
    batch_offset = torch.arange(iy.shape[-2], device=iy.device).unsqueeze(-1) * (rows * cols)
    return (local_y * cols + local_x + batch_offset).reshape(-1)


def fused_linear_relu_available(hidden: torch.Tensor) -> bool:
    """Whether oneDNN's Linear+ReLU kernel can serve: CPU float32 inference only."""
    return (hidden.device.type == "cpu" and hidden.dtype == torch.float32 and not torch.is_grad_enabled()
            and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def mlp_tail(hidden: torch.Tensor, linears: list[torch.nn.Linear]) -> torch.Tensor:
    """ReLU then each Linear in turn, from the first layer's pre-activations to the output."""
    hidden = F.relu(hidden)
    if fused_linear_relu_available(hidden):
        # Bias and ReLU in the GEMM's epilogue save a pass over memory per layer (about 20% on CPU).
        for linear in linears[:-1]:
            hidden = torch.ops.mkldnn._linear_pointwise(hidden, linear.weight, linear.bias, "relu", [], "")
        return linears[-1](hidden)
    for linear in linears[:-1]:
        hidden = F.relu(linear(hidden))
    return linears[-1](hidden)


def fast_query(latents: Latents, coord: torch.Tensor, cell: torch.Tensor | None, imnet,
               local_ensemble: bool, cell_decode: bool) -> torch.Tensor:
    """The same function as ``reference_query``, by gathering per-latent first-layer pre-activations."""
    h, w = latents.grid_shape
    table = latents.values.reshape(-1, latents.values.shape[-1])
    batch, n_queries = coord.shape[:2]
    if imnet is None:
        iy, ix = nearest_index(coord[..., 0], h), nearest_index(coord[..., 1], w)
        inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        rows = window_rows(latents, iy.clamp(0, h - 1), ix.clamp(0, w - 1))
        return table.index_select(0, rows).view(batch, n_queries, -1) * inside.unsqueeze(-1)

    centres_y = make_coord((h,), device=coord.device).view(-1).to(coord.dtype)
    centres_x = make_coord((w,), device=coord.device).view(-1).to(coord.dtype)
    shifts, eps = ensemble_shifts(local_ensemble)
    rx, ry = 2 / h / 2, 2 / w / 2
    index_y, index_x, rel_terms, areas = [], [], [], []
    for vx, vy in shifts:
        iy = nearest_index((coord[..., 0] + (vx * rx + eps)).clamp(-CLAMP, CLAMP), h).clamp(0, h - 1)
        ix = nearest_index((coord[..., 1] + (vy * ry + eps)).clamp(-CLAMP, CLAMP), w).clamp(0, w - 1)
        rel_y = (coord[..., 0] - centres_y[iy]) * h
        rel_x = (coord[..., 1] - centres_x[ix]) * w
        terms = [rel_y, rel_x]
        if cell_decode:
            terms += [cell[..., 0] * h, cell[..., 1] * w]
        index_y.append(iy)
        index_x.append(ix)
        rel_terms.append(torch.stack(terms, dim=-1))
        areas.append(torch.abs(rel_y * rel_x) + AREA_EPS)

    # All shifts and batch items go through each layer as one matrix multiply.
    rows = window_rows(latents, torch.stack(index_y), torch.stack(index_x))
    linears = imnet.linears
    extra_weight = linears[0].weight[:, linears[0].weight.shape[1] - rel_terms[0].shape[-1]:]
    hidden = torch.addmm(table.index_select(0, rows), torch.stack(rel_terms).view(rows.shape[0], -1),
                         extra_weight.t())
    hidden = mlp_tail(hidden, linears[1:])
    preds = hidden.view(len(shifts), batch, n_queries, -1).unbind(0)
    return blend_ensemble(list(preds), areas, local_ensemble)
