"""Upscale a picture to any scale, size or region: plan the geometry, render tile by tile, quantise.

``upscale(image, scale=3.5)`` is the whole job; the steps (``plan_target``, ``check_target``,
``render_picture``) are public so the CLI can check an output path before spending time on rendering.
Output size = round(region size x scale) per axis, halves rounded up; the region defaults to the whole
picture, in input-pixel coordinates where pixel (0, 0) spans [0, 1] x [0, 1].
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from tqdm import tqdm

from liif.checkpoint import load_model
from liif.errors import LiifError
from liif.imageio import Picture, picture_from_pil, read_picture
from liif.pretrained import DEFAULT_MODEL
from liif.models.liif import DEFAULT_CHUNK
from liif.tiling import Grid, render_tiles

DEFAULT_MAX_PIXELS = 500_000_000
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ALPHA_MODES = ("model", "bicubic")


@dataclass(frozen=True)
class Target:
    """The output: ``size`` (H, W) pixels covering ``region`` (x0, y0, x1, y1) of the input, in input pixels."""

    size: tuple[int, int]
    region: tuple[float, float, float, float]

    def grid(self, input_shape: tuple[int, int]) -> Grid:
        """The output pixel grid in the model's [-1, 1] coordinates, for an input of (h, w) pixels."""
        x0, y0, x1, y1 = self.region
        h, w = input_shape
        return Grid(self.size, ((2 * y0 / h - 1, 2 * y1 / h - 1), (2 * x0 / w - 1, 2 * x1 / w - 1)))


def round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def check_scale(scale: float | Sequence[float]) -> tuple[float, float]:
    """(sy, sx) from one scale or a (sy, sx) pair; each must be a finite number above zero."""
    pair = tuple(scale) if isinstance(scale, (tuple, list)) else (scale, scale)
    if len(pair) != 2:
        raise LiifError(f"scale must be one number or two (sy, sx), got {len(pair)}")
    for value in pair:
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise LiifError(f"scale must be a finite number above 0, got {value}")
    return float(pair[0]), float(pair[1])


def check_region(region: Sequence[float] | None, input_shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """The region (x0, y0, x1, y1), default the whole input; it must lie inside the input and not be empty."""
    h, w = input_shape
    if region is None:
        return 0.0, 0.0, float(w), float(h)
    if len(region) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in region):
        raise LiifError(f"region must be four finite numbers x0,y0,x1,y1, got {region}")
    x0, y0, x1, y1 = (float(v) for v in region)
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise LiifError(f"region {x0:g},{y0:g},{x1:g},{y1:g} must satisfy 0 <= x0 < x1 <= {w} "
                        f"and 0 <= y0 < y1 <= {h} (the input is {w}x{h})")
    return x0, y0, x1, y1


def plan_target(input_shape: tuple[int, int], scale: float | Sequence[float] | None = None,
                size: tuple[int, int] | None = None, width: int | None = None, height: int | None = None,
                region: Sequence[float] | None = None) -> Target:
    """The output geometry from exactly one of: ``scale``, ``size`` (W, H), ``width``, ``height``."""
    chosen = [name for name, value in (("scale", scale), ("size", size), ("width", width), ("height", height))
              if value is not None]
    if len(chosen) != 1:
        raise LiifError("give exactly one of scale, size, width or height" if chosen else
                        "give a scale, a size, a width or a height for the output")
    box = check_region(region, input_shape)
    region_w, region_h = box[2] - box[0], box[3] - box[1]
    if scale is not None:
        sy, sx = check_scale(scale)
        out = (round_half_up(region_h * sy), round_half_up(region_w * sx))
    elif size is not None:
        out = (size[1], size[0])
    elif width is not None:
        out = (round_half_up(width * region_h / region_w), width)
    else:
        out = (height, round_half_up(height * region_w / region_h))
    if not all(isinstance(n, int) and n >= 1 for n in out):
        raise LiifError(f"the output would be {out[1]}x{out[0]} pixels; it needs at least 1x1")
    return Target(out, box)


def available_memory() -> int | None:
    """Bytes of memory available now (Linux), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_target(target: Target, picture: Picture, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse outputs above ``max_pixels`` or whose buffer would not fit in the memory available."""
    height, width = target.size
    if height * width > max_pixels:
        raise LiifError(f"the output would be {width}x{height} = {height * width / 1e6:.1f} MP, above the "
                        f"limit of {max_pixels / 1e6:g} MP (raise it with --max-pixels)")
    needed = height * width * picture.pixels.shape[2] * picture.pixels.itemsize
    free = available_memory()
    if free is not None and needed > free:
        raise LiifError(f"the {width}x{height} output needs {needed / 2**30:.1f} GiB of memory, "
                        f"only {free / 2**30:.1f} GiB is available")


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA, then MPS, then the CPU; a named device must be present."""
    cuda = torch.cuda.is_available()
    mps = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise LiifError(f"unknown device {name!r}; use auto, cpu, cuda or mps")
    if (name.startswith("cuda") and not cuda) or (name == "mps" and not mps):
        raise LiifError(f"device {name} is not available on this machine")
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the model on a GPU; fp32 everywhere else."""
    if precision not in PRECISIONS:
        raise LiifError(f"unknown precision {precision!r}; use fp32, bf16 or fp16")
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type == "cpu":
        raise LiifError(f"precision {precision} is for GPUs only; on the CPU the model runs in fp32")
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


def model_input(picture: Picture, alpha: str, device: torch.device) -> torch.Tensor:
    """The normalised (B, 3, h, w) batch: the colour (gray repeated to RGB), then alpha as gray if it goes
    through the model, so both share every tile and coordinate."""
    planes = [picture.color]
    if picture.has_alpha and alpha == "model":
        planes.append(picture.alpha[:, :, None])
    batch = [torch.from_numpy(p.astype(np.float32) / picture.max_value).permute(2, 0, 1).expand(3, -1, -1)
             for p in planes]
    return (torch.stack(batch) - 0.5).div(0.5).to(device)


def quantise(block: torch.Tensor, max_value: int, channels: int) -> np.ndarray:
    """(B, 3, hb, wb) normalised output -> (hb, wb, channels) integers, truncating like the reference demo.

    Batch item 0 is the colour (gray outputs take the channel mean), item 1, if any, the alpha (mean).
    """
    img = (block.float() * 0.5 + 0.5).clamp(0, 1)
    planes = [img[0] if channels in (3, 4) else img[0].mean(0, keepdim=True)]
    if block.shape[0] > 1:
        planes.append(img[1].mean(0, keepdim=True))
    out = (torch.cat(planes) * max_value).permute(1, 2, 0).cpu().numpy()
    return out.astype(np.uint16 if max_value > 255 else np.uint8)


def bicubic_alpha(picture: Picture, target: Target) -> np.ndarray:
    """The alpha channel resized by PIL bicubic over the target region, (H, W)."""
    alpha = Image.fromarray(picture.alpha.astype(np.float32), "F")
    resized = alpha.resize(target.size[::-1], Image.BICUBIC, box=target.region)
    return np.asarray(resized).round().clip(0, picture.max_value).astype(picture.pixels.dtype)


@torch.no_grad()
def render_picture(model: nn.Module, picture: Picture, target: Target, self_ensemble: bool = False,
                   alpha: str = "model", precision: str = "fp32", tile: int = 256, chunk_size: int = DEFAULT_CHUNK,
                   progress: bool = False, label: str | None = None) -> Picture:
    """Render ``target`` of ``picture`` with ``model`` (on its device) into a Picture of the same depth,
    channels and ICC profile, tile by tile into one output buffer."""
    if alpha not in ALPHA_MODES:
        raise LiifError(f"unknown alpha mode {alpha!r}; use model or bicubic")
    device = next(model.parameters()).device
    inp = model_input(picture, alpha, device)
    grid = target.grid(picture.pixels.shape[:2])
    channels = picture.pixels.shape[2]
    out = np.empty((*target.size, channels), dtype=picture.pixels.dtype)
    model_channels = channels if alpha == "model" or not picture.has_alpha else channels - 1
    bar = tqdm(total=target.size[0] * target.size[1], desc=label, unit="px", unit_scale=True,
               disable=not progress, leave=True, file=sys.stderr, dynamic_ncols=True)
    with bar, autocast(device, precision):
        for row, col, block in render_tiles(model, inp, grid, tile, chunk_size, self_ensemble):
            rows, cols = block.shape[2:]
            out[row:row + rows, col:col + cols, :model_channels] = quantise(block, picture.max_value, channels)
            bar.update(rows * cols)
    if model_channels < channels:
        out[:, :, -1] = bicubic_alpha(picture, target)
    return Picture(out, picture.icc_profile)


def as_picture(image: Picture | Image.Image | np.ndarray | str | os.PathLike) -> Picture:
    if isinstance(image, Picture):
        return image
    if isinstance(image, Image.Image):
        return picture_from_pil(image)
    if isinstance(image, np.ndarray):
        if image.dtype not in (np.uint8, np.uint16) or image.ndim not in (2, 3) or \
                (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)) or image.size == 0:
            raise LiifError(f"an array image must be (H, W) or (H, W, 1|2|3|4), uint8 or uint16; "
                            f"got {image.shape} {image.dtype}")
        return Picture(image if image.ndim == 3 else image[:, :, None])
    if isinstance(image, (str, os.PathLike)):
        try:
            return read_picture(image)
        except LiifError as exc:
            raise LiifError(f"{image}: {exc}") from None
    raise LiifError(f"cannot upscale a {type(image).__name__}: pass a path, a PIL image, an array or a Picture")


def resolve_model(model: str | os.PathLike | nn.Module, device: torch.device) -> nn.Module:
    return model.to(device).eval() if isinstance(model, nn.Module) else load_model(model, device)


def upscale(image: Picture | Image.Image | np.ndarray | str | os.PathLike,
            scale: float | Sequence[float] | None = None, *, size: tuple[int, int] | None = None,
            width: int | None = None, height: int | None = None, region: Sequence[float] | None = None,
            model: str | os.PathLike | nn.Module = DEFAULT_MODEL, device: str = "auto", precision: str = "fp32",
            self_ensemble: bool = False, alpha: str = "model", max_pixels: int = DEFAULT_MAX_PIXELS,
            tile: int = 256, progress: bool = False) -> Picture | Image.Image | np.ndarray:
    """Upscale (or downscale) ``image``: a PIL image gives a PIL image, an array an array, a path or a
    Picture a Picture (``.save(path)``, ``.pixels``). ``size`` is (W, H); ``region`` is x0,y0,x1,y1."""
    picture = as_picture(image)
    target = plan_target(picture.pixels.shape[:2], scale, size, width, height, region)
    check_target(target, picture, max_pixels)
    torch_device = pick_device(device)
    autocast(torch_device, precision)  # refuse a bad precision before loading anything
    net = resolve_model(model, torch_device)
    result = render_picture(net, picture, target, self_ensemble, alpha, precision, tile, progress=progress,
                            label=Path(image).name if isinstance(image, (str, os.PathLike)) else None)
    if isinstance(image, Image.Image):
        return result.to_pil()
    if isinstance(image, np.ndarray):
        return result.pixels if image.ndim == 3 else result.pixels[:, :, 0]
    return result
