"""Test-time LR images: the reference's geometry (spec 5.2) with PIL bicubic or a port of MATLAB's imresize."""

from __future__ import annotations

import math

import numpy as np
import torch

from liif.resize import from_uint8, pil_bicubic, to_uint8

DEGRADATIONS = ("pil", "matlab")
CUBIC_WIDTH = 4.0  # support of the a = -0.5 cubic kernel, in input pixels


def lr_size(hr_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """The LR size the reference test makes from an HR of ``hr_size``: floor(H/s + 1e-9), floor(W/s + 1e-9)."""
    return math.floor(hr_size[0] / scale + 1e-9), math.floor(hr_size[1] / scale + 1e-9)


def matlab_lr_size(hr_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """The LR size MATLAB's imresize(hr, 1/s) makes from an HR of ``hr_size`` at an integer scale: ceil(H/s),
    ceil(W/s) (its last LR pixel overhangs the HR where s does not divide that side)."""
    return -(-hr_size[0] // int(scale)), -(-hr_size[1] // int(scale))


def pairs_at(hr_size: tuple[int, int], lr_size_read: tuple[int, int], scale: float) -> bool:
    """Whether an LR of ``lr_size_read`` is one an HR of ``hr_size`` makes at ``scale``: on each side floor(H/s), as
    the reference makes it, or ceil(H/s), as MATLAB's imresize does."""
    return all(size in sizes for size, *sizes in zip(lr_size_read, lr_size(hr_size, scale),
                                                        matlab_lr_size(hr_size, scale)))


def paired_scale(hr_size: tuple[int, int], lr_size_read: tuple[int, int]) -> int | None:
    """The integer scale at which an HR and an LR of these sizes pair (``pairs_at``): the reference's H // h, or
    one more, where a MATLAB-made LR's rounding up makes H // h fall short; None when they pair at none."""
    below = hr_size[0] // lr_size_read[0]
    return next((s for s in (below, below + 1) if s >= 1 and pairs_at(hr_size, lr_size_read, s)), None)


def hr_crop_size(lr: tuple[int, int], scale: float) -> tuple[int, int]:
    """The top-left HR crop that matches an LR of size ``lr``: (round(h*s), round(w*s)), as the reference."""
    return round(lr[0] * scale), round(lr[1] * scale)


def lr_geometry(hr_size: tuple[int, int], scale: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """(LR size, top-left HR crop) the reference test makes from an HR of ``hr_size``; a ValueError when the HR is
    too small for an LR pixel at ``scale``."""
    small = lr_size(hr_size, scale)
    if min(small) < 1:
        raise ValueError(f"a {hr_size[1]}x{hr_size[0]} image is too small for x{scale:g}")
    return small, hr_crop_size(small, scale)


def make_lr(hr: torch.Tensor, scale: float, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(cropped HR, LR) of a (3, H, W) 8-bit-valued HR in [0, 1]: crop top-left, then bicubic to the LR size."""
    small, crop = lr_geometry(tuple(hr.shape[-2:]), scale)
    hr = hr[:, :crop[0], :crop[1]]
    if method == "pil":
        return hr, pil_bicubic(hr, small)
    if method == "matlab":
        # imresize(hr, 1/s) when s is an integer, so the kernel scale is exactly MATLAB's
        kernel_scale = 1 / scale if float(scale).is_integer() else None
        return hr, from_uint8(matlab_imresize(to_uint8(hr), small, kernel_scale))
    raise ValueError(f"unknown degradation {method!r} (choose from {', '.join(DEGRADATIONS)})")


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, MATLAB's 'bicubic'."""
    ax = np.abs(x)
    near = (1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1)
    far = (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def contributions(in_length: int, out_length: int, scale: float,
                  antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's per-output weights (out, taps) and 0-based input indices (out, taps), mirrored at the borders."""
    stretch = scale if scale < 1 and antialias else 1.0
    # downscaling widens the kernel by 1/scale (and lowers it by scale) so that it low-pass filters
    width = CUBIC_WIDTH / stretch
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in 1-based input coordinates
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    indices = left[:, None] + np.arange(taps)[None, :]
    weights = stretch * cubic(stretch * (u[:, None] - indices))
    weights /= weights.sum(axis=1, keepdims=True)
    # symmetric padding: ..., 2, 1 | 1, 2, ..., n | n, n-1, ...
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    return weights, indices


def matlab_imresize(img: np.ndarray, size: tuple[int, int], scale: float | None = None) -> np.ndarray:
    """MATLAB ``imresize(img, size, 'bicubic')`` (antialiased) of an (H, W[, C]) array; uint8 in, uint8 out.

    ``scale`` sets the kernel scale of both axes, as ``imresize(img, scale)`` does; by default it is out/in per axis.
    A uint8 image is rounded to 8 bits after each axis, like MATLAB's uint8 path.
    """
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"output size must be two positive integers, got {size}")
    scales = [scale if scale is not None else size[axis] / img.shape[axis] for axis in (0, 1)]
    out = img
    # MATLAB resizes the axis with the smaller scale first (a stable sort, so rows first on a tie)
    for axis in sorted((0, 1), key=lambda a: scales[a]):
        weights, indices = contributions(img.shape[axis], size[axis], scales[axis])
        out = resize_axis(out, axis, weights, indices, round_to_uint8=img.dtype == np.uint8)
    return out


def resize_axis(img: np.ndarray, axis: int, weights: np.ndarray, indices: np.ndarray,
                round_to_uint8: bool) -> np.ndarray:
    """Resample one axis of ``img`` with per-output ``weights`` and ``indices``, in float64."""
    moved = np.moveaxis(img, axis, 0)
    shape = (weights.shape[0],) + (1,) * (moved.ndim - 1)
    out = np.zeros((weights.shape[0],) + moved.shape[1:], dtype=np.float64)
    for tap in range(weights.shape[1]):
        out += weights[:, tap].reshape(shape) * moved[indices[:, tap]]
    if round_to_uint8:
        out = np.floor(np.clip(out, 0, 255) + 0.5).astype(np.uint8)  # MATLAB rounds halves away from zero
    return np.moveaxis(out, 0, axis)
