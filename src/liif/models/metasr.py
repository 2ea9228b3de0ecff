"""The MetaSR baseline (registered as ``metasr``, the reference's models/misc.py): per query, an MLP of the
query's offset and scale predicts the weights that map its latent's unfolded 3x3 neighbourhood to a colour.

``reference`` follows the reference step by step (spec 4.10): a 3x3 unfold, the query moved to its pixel's
top-left corner, a nearest ``grid_sample``, and a (576 x 3) weight matrix per query. ``fast`` (the default)
never builds the unfolded map nor the per-query weight matrix: the MLP's last layer is linear, so
colour = hidden . (unfolded features . last weights) + unfolded features . last bias, and the bracket is one 3x3
convolution per latent; each query gathers its latent's row by integer index and runs the small MLP head.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from liif.geometry import make_coord
from liif.models.implicit import TableLatents, TwoPathModel, table_latents
from liif.models.liif import CLAMP, EPS_SHIFT, nearest_index
from liif.registry import make, register

HIDDEN = [256]  # the reference's MetaSR MLP, 3 -> 256 -> 9C x 3


@register("metasr")
class MetaSR(TwoPathModel):
    """Encoder plus a weight-predicting MLP (Meta-SR, Hu et al. 2019, as the LIIF reference implements it)."""

    def __init__(self, encoder_spec: dict[str, Any]) -> None:
        super().__init__()
        self.encoder = make(encoder_spec)
        self.imnet = make({"name": "mlp", "args": {"in_dim": 3, "out_dim": self.encoder.out_dim * 9 * 3,
                                                   "hidden_list": HIDDEN}})
        self.feature_halo = 1
        # The query moves half an output pixel up and left: within one latent of its own when upscaling, two
        # latents when downscaling by up to 3x (beyond that, see ``reach``).
        self.latent_reach = 2

    def reference_query(self, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """The reference algorithm (spec 4.10)."""
        batch, channels, h, w = feat.shape
        feat = F.unfold(feat, 3, padding=1).view(batch, channels * 9, h, w)
        corners = make_coord((h, w), flatten=False, device=feat.device)
        corners[:, :, 0] -= (2 / h) / 2
        corners[:, :, 1] -= (2 / w) / 2
        corners = corners.permute(2, 0, 1).unsqueeze(0).expand(batch, 2, h, w).to(coord.dtype)
        shifted = coord - cell / 2
        grid = (shifted + EPS_SHIFT).clamp(-CLAMP, CLAMP).flip(-1).unsqueeze(1)
        q_feat = F.grid_sample(feat, grid, mode="nearest", align_corners=False)[:, :, 0, :].permute(0, 2, 1)
        q_corner = F.grid_sample(corners, grid, mode="nearest", align_corners=False)[:, :, 0, :].permute(0, 2, 1)
        half_hw = torch.tensor([h / 2, w / 2], dtype=coord.dtype, device=coord.device)
        rel_coord = (shifted - q_corner) * half_hw
        scale_inverse = cell[:, :, :1] * (h / 2)
        n_queries = coord.shape[1]
        weights = self.imnet(torch.cat([rel_coord, scale_inverse], dim=-1)).view(batch * n_queries, channels * 9, 3)
        return torch.bmm(q_feat.reshape(batch * n_queries, 1, -1), weights).view(batch, n_queries, 3)

    def fast_latents(self, feat: torch.Tensor, grid_shape: tuple[int, int], origin: tuple[int, int]) -> TableLatents:
        """Per latent, the unfolded neighbourhood contracted with the last layer's weights and bias: a 3x3
        convolution to (hidden + 1) x 3 channels, which loses the window's outermost latent on sides inside the
        grid."""
        last = self.imnet.linears[-1]
        channels, hidden = feat.shape[1], last.weight.shape[1]
        # The unfolded index is channel-major, c * 9 + ky * 3 + kx, and the output row of (unfolded m, colour j)
        # is m * 3 + j: reorder to a convolution whose output channel is (hidden unit i, colour j), then j's bias.
        weight = last.weight.view(channels, 3, 3, 3, hidden).permute(4, 3, 0, 1, 2).reshape(hidden * 3, channels, 3, 3)
        bias = last.bias.view(channels, 3, 3, 3).permute(3, 0, 1, 2)
        values = F.conv2d(feat, torch.cat([weight, bias], dim=0), padding=1)
        return table_latents(values, grid_shape, origin, self.feature_halo)

    def reach(self, cell: tuple[float, float], grid_shape: tuple[int, int]) -> int:
        """The query moves half an output pixel up and left: beyond ``latent_reach`` when downscaling by more than
        3x, by as many latents as the move takes."""
        cell_y, cell_x = self.clip_cell(torch.tensor(cell, dtype=torch.float64), grid_shape).tolist()
        moved = max(cell_y * grid_shape[0], cell_x * grid_shape[1]) / 4
        return max(self.latent_reach, math.ceil(moved + 0.5))

    def fast_query(self, latents: TableLatents, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """The same function as ``reference_query``, from each query's row of the per-latent table."""
        window = latents.window
        h, w = window.grid_shape
        shifted = coord - cell / 2
        looked_up = (shifted + EPS_SHIFT).clamp(-CLAMP, CLAMP)
        iy, ix = nearest_index(looked_up[..., 0], h), nearest_index(looked_up[..., 1], w)
        corner_y = make_coord((h,), device=coord.device).view(-1).to(coord.dtype) - (2 / h) / 2
        corner_x = make_coord((w,), device=coord.device).view(-1).to(coord.dtype) - (2 / w) / 2
        rel_y = (shifted[..., 0] - corner_y[iy]) * (h / 2)
        rel_x = (shifted[..., 1] - corner_x[ix]) * (w / 2)
        head = torch.stack([rel_y, rel_x, cell[..., 0] * (h / 2)], dim=-1).view(-1, 3)
        hidden = F.relu(self.imnet.linears[0](head))
        rows = latents.rows.index_select(0, window.rows_of(iy, ix))
        n_hidden = hidden.shape[1]
        folded = rows[:, :n_hidden * 3].view(-1, n_hidden, 3)
        out = torch.bmm(hidden.unsqueeze(1), folded).squeeze(1) + rows[:, n_hidden * 3:]
        return out.view(*coord.shape[:2], 3)
