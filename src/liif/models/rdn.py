"""Residual Dense Network encoder (registered as ``rdn``), keys as in the reference."""

from __future__ import annotations

import torch
import torch.nn as nn

from liif.registry import register

# (number of RDBs D, convs per RDB C, growth rate G)
RDN_CONFIGS = {"A": (20, 6, 32), "B": (16, 8, 64)}


class RDBConv(nn.Module):
    def __init__(self, in_channels: int, growth: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, growth, kernel_size, padding=kernel_size // 2), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.conv(x)), 1)


class RDB(nn.Module):
    def __init__(self, base: int, growth: int, n_convs: int, kernel_size: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(*[RDBConv(base + c * growth, growth, kernel_size) for c in range(n_convs)])
        self.LFF = nn.Conv2d(base + n_convs * growth, base, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LFF(self.convs(x)) + x


@register("rdn")
class RDN(nn.Module):
    """Shallow features, D dense blocks, global feature fusion; optional upsampling network."""

    def __init__(self, G0: int = 64, RDNkSize: int = 3, RDNconfig: str = "B", scale: int = 2,
                 no_upsampling: bool = False, n_colors: int = 3) -> None:
        super().__init__()
        if RDNconfig not in RDN_CONFIGS:
            raise ValueError(f"RDNconfig must be one of {sorted(RDN_CONFIGS)}, not {RDNconfig!r}")
        n_blocks, n_convs, growth = RDN_CONFIGS[RDNconfig]
        pad = RDNkSize // 2
        self.SFENet1 = nn.Conv2d(n_colors, G0, RDNkSize, padding=pad)
        self.SFENet2 = nn.Conv2d(G0, G0, RDNkSize, padding=pad)
        self.RDBs = nn.ModuleList([RDB(G0, growth, n_convs, RDNkSize) for _ in range(n_blocks)])
        self.GFF = nn.Sequential(nn.Conv2d(n_blocks * G0, G0, 1), nn.Conv2d(G0, G0, RDNkSize, padding=pad))
        self.no_upsampling = no_upsampling
        if no_upsampling:
            self.out_dim = G0
        else:
            if scale in (2, 3):
                up = [nn.Conv2d(G0, growth * scale * scale, RDNkSize, padding=pad), nn.PixelShuffle(scale)]
            elif scale == 4:
                up = [nn.Conv2d(G0, growth * 4, RDNkSize, padding=pad), nn.PixelShuffle(2),
                      nn.Conv2d(growth, growth * 4, RDNkSize, padding=pad), nn.PixelShuffle(2)]
            else:
                raise ValueError(f"RDN upsampling supports scales 2, 3 and 4, not {scale}")
            self.UPNet = nn.Sequential(*up, nn.Conv2d(growth, n_colors, RDNkSize, padding=pad))
            self.out_dim = n_colors
        self.receptive_radius = pad * (3 + n_blocks * n_convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.SFENet1(x)
        x = self.SFENet2(f1)
        block_outputs = []
        for block in self.RDBs:
            x = block(x)
            block_outputs.append(x)
        x = self.GFF(torch.cat(block_outputs, 1)) + f1
        return x if self.no_upsampling else self.UPNet(x)
