"""The decoder MLP (registered as ``mlp``); keys ``layers.N`` match the reference."""

from __future__ import annotations

import torch
import torch.nn as nn

from liif.bounds import COUNT
from liif.registry import register


@register("mlp")
class MLP(nn.Module):
    """Linear/ReLU stack: in_dim -> hidden_list... -> out_dim."""

    def __init__(self, in_dim: int, out_dim: int, hidden_list: list[int]) -> None:
        super().__init__()
        if not all(COUNT.fits(n) for n in (in_dim, out_dim, *hidden_list)):
            raise ValueError(f"layer sizes must be whole numbers >= 1, got {in_dim}, {hidden_list}, {out_dim}")
        layers: list[nn.Module] = []
        last_dim = in_dim
        for hidden in hidden_list:
            layers += [nn.Linear(last_dim, hidden), nn.ReLU()]
            last_dim = hidden
        layers.append(nn.Linear(last_dim, out_dim))
        self.layers = nn.Sequential(*layers)
        self.out_dim = out_dim

    @property
    def linears(self) -> list[nn.Linear]:
        """The Linear layers in order."""
        return [m for m in self.layers if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leading = x.shape[:-1]
        return self.layers(x.reshape(-1, x.shape[-1])).view(*leading, -1)
