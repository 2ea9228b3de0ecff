"""Bicubic resizing with PIL on 8-bit images, as the reference's ``resize_fn`` (torchvision Resize, BICUBIC)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> (H, W, C) uint8, truncating like torchvision's ToPILImage."""
    return (img.detach().cpu().clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()


def from_uint8(array: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 -> (C, H, W) float in [0, 1]."""
    return torch.from_numpy(np.array(array, dtype=np.uint8)).permute(2, 0, 1).float() / 255


def pil_bicubic(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a (C, H, W) image in [0, 1] to ``size`` = (height, width) by PIL bicubic on its 8-bit version."""
    pil = Image.fromarray(to_uint8(img).squeeze(-1) if img.shape[0] == 1 else to_uint8(img))
    resized = np.array(pil.resize((size[1], size[0]), Image.BICUBIC))  # writable, as torch wants
    return from_uint8(resized if resized.ndim == 3 else resized[..., None])
