"""PSNR and SSIM as the SR literature computes them (spec 6.2): float64, borders shaved, Y or RGB."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PROTOCOLS = ("benchmark", "div2k")
# EDSR's luminance weights (spec 6.2); /256 of these equals MATLAB rgb2ycbcr's /255 weights to 1e-6
Y_WEIGHTS = (65.738 / 256, 129.057 / 256, 25.064 / 256)
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5


def shave_for(protocol: str, scale: float) -> int:
    """Border pixels dropped per side: scale for ``benchmark`` (Y), scale + 6 for ``div2k`` (RGB)."""
    base = math.ceil(scale - 1e-9)  # an integer scale as is; a fractional one rounded up
    return base if protocol == "benchmark" else base + 6


def psnr_on_y(protocol: str) -> bool:
    """Whether ``protocol`` takes PSNR on Y (``benchmark``, EDSR's) or on RGB (``div2k``)."""
    return protocol == "benchmark"


def luminance(img: torch.Tensor) -> torch.Tensor:
    """Y without the +16 offset, (..., 3, H, W) in [0, 1] -> (..., H, W) in [0, 0.859]."""
    weights = torch.tensor(Y_WEIGHTS, dtype=img.dtype, device=img.device)
    return torch.einsum("...chw,c->...hw", img, weights)


def shave(img: torch.Tensor, border: int) -> torch.Tensor:
    """``img`` without ``border`` pixels on each side of its last two dimensions."""
    if border == 0:
        return img
    check_shavable(tuple(img.shape[-2:]), border)
    return img[..., border:-border, border:-border]


def check_shavable(size: tuple[int, int], border: int) -> None:
    """Raise a ValueError when an image of ``size`` (H, W) has no pixel left once ``border`` px are shaved."""
    if min(size) <= 2 * border:
        raise ValueError(f"a {size[1]}x{size[0]} image is too small to shave {border} px per side")


def check_scorable(size: tuple[int, int], border: int) -> None:
    """Raise the ValueError ``psnr`` or ``ssim_y`` would raise on images of ``size`` (H, W) shaved by ``border``:
    too small to shave, or for the SSIM window once shaved."""
    check_shavable(size, border)
    if min(size) - 2 * border < SSIM_WINDOW:
        raise ValueError(f"a {size[1] - 2 * border}x{size[0] - 2 * border} image (after shaving) is smaller than "
                         f"the SSIM window")


def psnr(sr: torch.Tensor, hr: torch.Tensor, border: int, on_y: bool) -> float:
    """PSNR (dB, peak 1) of (3, H, W) images in [0, 1], on Y or on RGB, ``border`` pixels shaved."""
    diff = sr.double() - hr.double()
    if on_y:
        diff = luminance(diff)
    mse = shave(diff, border).pow(2).mean().item()
    return math.inf if mse == 0 else -10 * math.log10(mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """The normalised 1-D Gaussian used (as an outer product) by SSIM, float64."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x**2 / (2 * sigma**2))
    return g / g.sum()


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, border: int) -> float:
    """SSIM of the Y channels (16 + Y, on 0..255) of (3, H, W) images in [0, 1], ``border`` pixels shaved.

    Wang et al.'s constants (K1 0.01, K2 0.03, L 255) and an 11x11 Gaussian (sigma 1.5) over valid positions only,
    as MATLAB's ssim_index and BasicSR compute it.
    """
    check_scorable(tuple(sr.shape[-2:]), border)
    x, y = (shave(16 + 255 * luminance(img.double()), border)[None, None] for img in (sr, hr))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = gaussian_window()

    def blur(img: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(img, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean().item()
