"""EDSR and EDSR-baseline encoders (registered as ``edsr-baseline`` and ``edsr``), keys as in the reference."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from liif.registry import register

RGB_MEAN = (0.4488, 0.4371, 0.4040)


def conv3x3(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Conv2d:
    """A convolution that keeps the size (padding of half the kernel), as EDSR's ``default_conv``."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


class MeanShift(nn.Conv2d):
    """Frozen 1x1 colour shift; kept only because reference checkpoints hold its weights (never applied)."""

    def __init__(self, rgb_range: float, sign: int) -> None:
        super().__init__(3, 3, kernel_size=1)
        self.weight.data.copy_(torch.eye(3).view(3, 3, 1, 1))
        self.bias.data.copy_(sign * rgb_range * torch.tensor(RGB_MEAN))
        for p in self.parameters():
            p.requires_grad = False


class ResBlock(nn.Module):
    def __init__(self, n_feats: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3x3(n_feats, n_feats), nn.ReLU(True), conv3x3(n_feats, n_feats))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class Upsampler(nn.Sequential):
    def __init__(self, scale: int, n_feats: int) -> None:
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [conv3x3(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [conv3x3(n_feats, 9 * n_feats), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"EDSR upsampling supports scales 2^n and 3, not {scale}")
        super().__init__(*layers)


class EDSR(nn.Module):
    """Head conv, residual body, optional pixel-shuffle tail; ``out_dim`` is n_feats without upsampling."""

    def __init__(self, n_resblocks: int, n_feats: int, res_scale: float, scale: int = 2,
                 no_upsampling: bool = False, rgb_range: float = 1, n_colors: int = 3) -> None:
        super().__init__()
        self.sub_mean = MeanShift(rgb_range, -1)
        self.add_mean = MeanShift(rgb_range, 1)
        self.head = nn.Sequential(conv3x3(n_colors, n_feats))
        self.body = nn.Sequential(*[ResBlock(n_feats, res_scale) for _ in range(n_resblocks)],
                                  conv3x3(n_feats, n_feats))
        self.no_upsampling = no_upsampling
        if no_upsampling:
            self.out_dim = n_feats
        else:
            self.tail = nn.Sequential(Upsampler(scale, n_feats), conv3x3(n_feats, n_colors))
            self.out_dim = n_colors
        # Each ResBlock holds two 3x3 convs, plus head and the closing body conv.
        self.receptive_radius = 2 * n_resblocks + 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head(x)
        out = self.body(head) + head
        return out if self.no_upsampling else self.tail(out)


@register("edsr-baseline")
def edsr_baseline(n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1, scale: int = 2,
                  no_upsampling: bool = False, rgb_range: float = 1) -> EDSR:
    """EDSR-baseline: 16 residual blocks of 64 features (the LIIF paper's light encoder)."""
    return EDSR(n_resblocks, n_feats, res_scale, scale, no_upsampling, rgb_range)


@register("edsr")
def edsr(n_resblocks: int = 32, n_feats: int = 256, res_scale: float = 0.1, scale: int = 2,
         no_upsampling: bool = False, rgb_range: float = 1) -> EDSR:
    """EDSR: 32 residual blocks of 256 features, residuals scaled by 0.1."""
    return EDSR(n_resblocks, n_feats, res_scale, scale, no_upsampling, rgb_range)
