"""Upscale a picture to any scale, size or region: plan the geometry, render tile by tile, quantise.

``upscale(image, scale=3.5)`` is the whole job; the steps (``Geometry.target`` in liif.geometry,
``check_target``, ``render_picture``) are public so the CLI can check an output path before rendering.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from tqdm import tqdm

from liif.bounds import Number, flag
from liif.checkpoint import load_model
from liif.errors import LiifError, option
from liif.imageio import Picture, picture_from_pil, read_picture
from liif.geometry import Geometry, Target
from liif.kernels import set_query_kernel
from liif.models.implicit import ImplicitModel, renderable
from liif.pretrained import DEFAULT_MODEL
from liif.renderer import FeatureCache, Source, render_tiles
from liif.runtime import autocast, check_fits, check_precision, pick_device
from liif.video.reader import is_moving

DEFAULT_MAX_PIXELS = 500_000_000
ALPHA_MODES = ("model", "bicubic")
BICUBIC_ROWS = 256  # output rows resized by PIL at a time (--alpha bicubic, resize_bicubic)


def checked_alpha(alpha: object) -> str:
    """``alpha`` if it is one of ``ALPHA_MODES``; else a LiifError naming them."""
    if alpha not in ALPHA_MODES:
        raise LiifError(f"unknown alpha mode {alpha!r}; use {' or '.join(ALPHA_MODES)}")
    return alpha


def checked_max_pixels(max_pixels: object) -> int:
    """``max_pixels`` as a whole number of pixels; a LiifError naming it unless it is a finite number of at least 1
    (NaN would lift the limit: no output is above it)."""
    return int(Number(low=1).check(max_pixels, option("max_pixels"), LiifError))


def check_target(target: Target, picture: Picture, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse outputs above ``max_pixels`` or whose buffer would not fit in the memory available."""
    height, width = target.size
    if height * width > max_pixels:
        raise LiifError(f"the output would be {width}x{height} = {height * width / 1e6:.1f} MP, above the "
                        f"limit of {max_pixels / 1e6:g} MP (raise it with {option('max_pixels')})")
    check_fits(height * width * picture.pixels.shape[2] * picture.pixels.itemsize, f"the {width}x{height} output",
               torch.device("cpu"))


def model_planes(picture: Picture, alpha: str) -> list[np.ndarray]:
    """The planes (h, w, 1 or 3) the model renders, views of the pixels: the colour, then alpha (as gray) if it
    goes through the model, so both share every tile and coordinate."""
    planes = [picture.color]
    if picture.has_alpha and alpha == "model":
        planes.append(picture.alpha[:, :, None])
    return planes


def quantise(block: torch.Tensor, max_value: int, channels: int) -> np.ndarray:
    """(B, 3, hb, wb) output in [0, 1] -> (hb, wb, channels) integers, truncating like the reference demo.

    Batch item 0 is the colour (gray outputs take the channel mean), item 1, if any, the alpha (mean).
    """
    planes = [block[0] if channels in (3, 4) else block[0].mean(0, keepdim=True)]
    if block.shape[0] > 1:
        planes.append(block[1].mean(0, keepdim=True))
    out = (torch.cat(planes) * max_value).permute(1, 2, 0).cpu().numpy()
    return out.astype(np.uint16 if max_value > 255 else np.uint8)


def fill_bicubic(out: np.ndarray, plane: np.ndarray, target: Target, max_value: int) -> None:
    """Fill ``out`` (H, W) with one (h, w) channel resized by PIL bicubic over the target region, BICUBIC_ROWS
    output rows at a time from the input rows under them: memory follows a strip, not the output or the input."""
    height, width = target.size
    x0, y0, x1, y1 = target.region
    step = (y1 - y0) / height  # input rows per output row
    reach = 2 * max(step, 1) + 1  # bicubic's support (PIL widens it when downscaling), and a row for rounding
    for top in range(0, height, BICUBIC_ROWS):
        rows = min(BICUBIC_ROWS, height - top)
        box_top, box_bottom = y0 + top * step, y0 + (top + rows) * step
        # whole rows of the input beyond the reach: PIL renormalises its weights only at the true borders
        first, last = max(0, math.floor(box_top - reach)), min(plane.shape[0], math.ceil(box_bottom + reach))
        window = Image.fromarray(plane[first:last].astype(np.float32), "F")
        strip = window.resize((width, rows), Image.BICUBIC, box=(x0, box_top - first, x1, box_bottom - first))
        out[top:top + rows] = np.asarray(strip).round().clip(0, max_value)


def resize_bicubic(picture: Picture, target: Target) -> Picture:
    """``target`` of ``picture`` by plain PIL bicubic, every channel at full depth: what LIIF is compared to."""
    out = np.empty((*target.size, picture.pixels.shape[2]), dtype=picture.pixels.dtype)
    for channel in range(out.shape[2]):
        fill_bicubic(out[:, :, channel], picture.pixels[:, :, channel], target, picture.max_value)
    return picture.with_pixels(out)


@torch.no_grad()
def render_picture(model: ImplicitModel, picture: Picture, target: Target, self_ensemble: bool = False,
                   alpha: str = "model", precision: str = "fp32", tile: int | None = None,
                   chunk_size: int | None = None, progress: bool = False, label: str | None = None,
                   cache: FeatureCache | None = None) -> Picture:
    """Render ``target`` of ``picture`` with ``model`` (on its device) into a Picture of the same depth,
    channels and ICC profile, tile by tile into one output buffer (``tile`` None: the device's side,
    ``liif.runtime.render_tile``); ``cache`` shares encoder features between renders of the same picture
    (exact: the pixels are the same without it)."""
    return render_pictures(model, [picture], target, self_ensemble, alpha, precision, tile, chunk_size,
                           progress, label, cache)[0]


@torch.no_grad()
def render_pictures(model: ImplicitModel, pictures: Sequence[Picture], target: Target, self_ensemble: bool = False,
                    alpha: str = "model", precision: str = "fp32", tile: int | None = None,
                    chunk_size: int | None = None, progress: bool = False, label: str | None = None,
                    cache: FeatureCache | None = None) -> list[Picture]:
    """``render_picture`` of several pictures of one shape (the frames of a video) in one batch for the model."""
    checked_alpha(alpha)
    device = next(model.parameters()).device
    inputs = [model_planes(picture, alpha) for picture in pictures]
    first = pictures[0]
    grid = target.grid(first.pixels.shape[:2])
    channels = first.pixels.shape[2]
    outs = [np.empty((*target.size, channels), dtype=first.pixels.dtype) for _ in pictures]
    model_channels = channels if alpha == "model" or not first.has_alpha else channels - 1
    # leave=None: kept when alone (one input), cleared when nested under a batch's files bar: a batch leaves one line
    bar = tqdm(total=target.size[0] * target.size[1], desc=label, unit="px", unit_scale=True,
               disable=not progress, leave=None, file=sys.stderr, dynamic_ncols=True)
    name = (alpha, *(picture.content_key for picture in pictures)) if cache is not None else None
    source = Source([plane for planes in inputs for plane in planes], device, first.max_value, name)
    with bar, autocast(device, precision, model):
        for row, col, block in render_tiles(model, source, grid, tile, chunk_size, self_ensemble, cache=cache):
            if not torch.isfinite(block).all():  # NaN passes the clamp to [0, 1]: never make pixels of it
                hint = (f" (fp16 overflowed: use {option('precision', 'bf16')} or {option('precision', 'fp32')})"
                        if precision == "fp16" else "")
                raise LiifError(f"the model gave NaN or infinite values{hint}; nothing was written")
            rows, cols = block.shape[2:]
            start = 0
            for out, planes in zip(outs, inputs):  # each picture's planes: its colour, then its alpha if any
                out[row:row + rows, col:col + cols, :model_channels] = \
                    quantise(block[start:start + len(planes)], first.max_value, channels)
                start += len(planes)
            bar.update(rows * cols)
    if model_channels < channels:
        for out, picture in zip(outs, pictures):
            fill_bicubic(out[:, :, -1], picture.alpha, target, picture.max_value)
    return [picture.with_pixels(out) for out, picture in zip(outs, pictures)]


def as_picture(image: Picture | Image.Image | np.ndarray | str | os.PathLike) -> Picture:
    """``image`` as a Picture: read from a path (a LiifError naming it when it cannot be), or wrapped."""
    if isinstance(image, Picture):
        return image
    if isinstance(image, Image.Image):
        return picture_from_pil(image)
    if isinstance(image, np.ndarray):
        return Picture(image)
    if isinstance(image, (str, os.PathLike)):
        try:
            return read_picture(image)
        except LiifError as exc:
            raise LiifError(f"{image}: {exc}") from None
    raise LiifError(f"cannot upscale a {type(image).__name__}: pass a path, a PIL image, an array or a Picture")


def resolve_model(model: str | os.PathLike | nn.Module, device: torch.device) -> nn.Module:
    """``model`` (a name, a path or a module) in eval mode on ``device``; on a GPU, an image model's encoder
    runs channels-last (``ImplicitModel.use_channels_last``)."""
    if isinstance(model, nn.Module):
        net = renderable(model).to(device).eval()  # checked first: a refused model stays where it was
    else:
        net = renderable(load_model(model, device))
    if device.type == "cuda":
        net.use_channels_last()
    return net


def model_on(model: str | os.PathLike | nn.Module, device: str, precision: str, kernel: str | None = None,
             compile: str = "none") -> nn.Module:
    """``model`` (a name, a path or a module) on the device ``device`` names, once ``precision`` is known to
    run there, with its query ``kernel`` set when given (``liif.kernels``) and its queries compiled in mode
    ``compile`` (``ImplicitModel.compile_queries``): what the Python API's entry points and the commands'
    model options start with."""
    torch_device = pick_device(device)
    check_precision(torch_device, precision)
    return configure_model(resolve_model(model, torch_device), precision, kernel, compile)


def configure_model(net: nn.Module, precision: str, kernel: str | None = None, compile: str = "none") -> nn.Module:
    """``net``, once ``precision`` is known to run it on its device, with its query ``kernel`` set when given and
    its queries compiled in mode ``compile``."""
    device = next(net.parameters()).device
    check_precision(device, precision, net)
    if compile != "none" and precision == "int8":
        raise LiifError(f"{option('compile')} does not run int8 queries (int8 compiles its own steps); leave one out")
    if kernel is not None:
        set_query_kernel(net, kernel, device)
    return net.compile_queries(compile) if compile != "none" else net


def upscale(image: Picture | Image.Image | np.ndarray | str | os.PathLike,
            scale: float | Sequence[float] | None = None, *, size: tuple[int, int] | None = None,
            width: int | None = None, height: int | None = None, region: Sequence[float] | None = None,
            model: str | os.PathLike | nn.Module = DEFAULT_MODEL, device: str = "auto", precision: str = "fp32",
            self_ensemble: bool = False, alpha: str = "model", max_pixels: int = DEFAULT_MAX_PIXELS,
            tile: int | None = None, progress: bool = False, kernel: str | None = None,
            compile: str = "none") -> Picture | Image.Image | np.ndarray:
    """Upscale (or downscale) ``image``: a PIL image gives a PIL image, an array ((H, W) or (H, W, C), as a
    ``Picture`` takes it) an array, a path or a Picture a Picture (``.save(path)``, ``.pixels``). ``size`` is (W, H);
    ``region`` is x0,y0,x1,y1; ``kernel`` and ``compile`` are ``model_on``'s."""
    if isinstance(image, (str, os.PathLike)) and is_moving(image):  # not its first frame alone, as if a picture
        raise LiifError(f"{image} is a video or an animation: liif.upscale_video upscales every frame of it")
    max_pixels = checked_max_pixels(max_pixels)
    picture = as_picture(image)
    target = Geometry(scale, size, width, height, region).target(picture.pixels.shape[:2])
    check_target(target, picture, max_pixels)
    for value, name in ((self_ensemble, "self_ensemble"), (progress, "progress")):
        flag(value, name, LiifError)  # before the model loads
    checked_alpha(alpha)
    net = model_on(model, device, precision, kernel, compile)
    result = render_picture(net, picture, target, self_ensemble, alpha, precision, tile, progress=progress,
                            label=Path(image).name if isinstance(image, (str, os.PathLike)) else None)
    if isinstance(image, Image.Image):
        return result.to_pil()
    if isinstance(image, np.ndarray):
        return result.pixels if image.ndim == 3 else result.pixels[:, :, 0]
    return result
