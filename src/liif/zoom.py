"""A continuous zoom into a point of a picture: frame regions on a geometric schedule, each frame rendered
exactly as ``liif upscale --region R_k --size WxH`` renders it, encoder features shared across frames; frames
below x1 (output pixels per picture pixel) are plain bicubic, antialiased.

The first frame shows the whole picture fitted to the frame (cut to the frame's aspect ratio: a frame's region
always lies inside the picture, so that it is a region ``liif upscale`` accepts); the last shows the point at
``end`` output pixels per picture pixel. The zoom factor grows geometrically, so the motion is smooth, and
every region is the first one scaled about the point, which stays where it is on the screen.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch.nn as nn
from PIL import Image, ImageColor
from tqdm import tqdm

from liif.bounds import COUNT, Number, flag
from liif.errors import LiifError, option
from liif.fileio import file_id
from liif.geometry import Geometry
from liif.imageio import Picture, eight_bit, picture_size, rgb8, srgb_converter
from liif.pretrained import DEFAULT_MODEL
from liif.renderer import FeatureCache
from liif.runtime import available_memory, render_tile
from liif.upscale import as_picture, check_target, model_on, render_picture, resize_bicubic

Region = tuple[float, float, float, float]
COMPARISONS = ("bicubic",)
# Frames per second: from 0.001, which the rate's fraction (denominator at most 1001) keeps above 0
FPS = Number(low=0.001, high=1000)
# Frames of one zoom: every frame's region is planned up front, so a nonsense count would fill the memory
# before anything is rendered; 100,000 frames is over an hour at 24 fps.
FRAMES = Number(int, low=1, high=100_000)
# Output pixels per picture pixel: far past any detail a model invents, and short of regions too small for floats
ZOOM = Number(low=0, high=1_000_000, low_open=True)
# A frame's side: a 16K frame, beyond any screen a zoom is made for.
FRAME_SIDE = Number(int, 1, 16384)


def fit_zoom(picture_size: tuple[int, int], frame_size: tuple[int, int]) -> float:
    """The smallest zoom (output pixels per picture pixel) whose frame region lies inside the picture."""
    (width, height), (frame_width, frame_height) = picture_size, frame_size
    return max(frame_width / width, frame_height / height)


def checked_zooms(start: object, end: object, what: str | None = None) -> tuple[float | None, float]:
    """(start, end) as numbers within ``ZOOM`` (start None: the fit, as it is); else a LiifError saying what ``what``
    (default: "the start zoom", "the end zoom") must be."""
    return (None if start is None else ZOOM.check(start, what or "the start zoom", LiifError),
            ZOOM.check(end, what or "the end zoom", LiifError))


def zoom_regions(picture_size: tuple[int, int], frame_size: tuple[int, int], center: tuple[float, float] | None = None,
                 start: float | None = None, end: float = 16.0, frames: int = 96) -> list[Region]:
    """The region (x0, y0, x1, y1), in picture pixels, of each frame of a zoom from ``start`` (None: the whole
    picture, fitted) to ``end`` output pixels per picture pixel into ``center`` (default: the middle)."""
    # Checked before any arithmetic: a string or an infinity would fail in a comparison, or give empty regions
    # that fail only once the model is loaded.
    for name, pair in (("the picture size", picture_size), ("the frame size", frame_size), (option("center"), center)):
        if pair is not None and (not isinstance(pair, (tuple, list)) or len(pair) != 2):
            raise LiifError(f"{name} must be two numbers (x, y), got {pair!r}")
    width, height = (COUNT.check(n, "the picture size", LiifError) for n in picture_size)
    frame_width, frame_height = (FRAME_SIDE.check(n, f"each side of {option('size')}", LiifError) for n in frame_size)
    fit = fit_zoom(picture_size, frame_size)
    # Said where the start is the fit: a small picture's fit in the default frame passes the default end unasked.
    whole = f"where the {frame_width}x{frame_height} frame shows the whole {width}x{height} picture"
    fitted = f", {whole}," if start is None else ""
    start, end = checked_zooms(start, end)
    start = fit if start is None else start
    cx, cy = (Number().check(v, option("center"), LiifError) for v in center) if center is not None else \
        (width / 2, height / 2)
    FRAMES.check(frames, option("frames"), LiifError)
    if not (0 <= cx <= width and 0 <= cy <= height):
        raise LiifError(f"{option('center')} {cx:g},{cy:g} must lie in the {width}x{height} picture")
    if start < fit:
        raise LiifError(f"the zoom starts at x{start:g}, below x{fit:.4g}, {whole}")
    if not start <= end:
        raise LiifError(f"the zoom must grow: x{start:.4g}{fitted} to x{end:g}")
    region_width, region_height = frame_width / start, frame_height / start
    x0 = min(max(cx - region_width / 2, 0.0), width - region_width)
    y0 = min(max(cy - region_height / 2, 0.0), height - region_height)
    regions = []
    for k in range(frames):
        shrink = (start / end) ** (k / (frames - 1)) if frames > 1 else 1.0  # start / zoom of frame k
        regions.append((max(0.0, cx + (x0 - cx) * shrink), max(0.0, cy + (y0 - cy) * shrink),
                        min(float(width), cx + (x0 + region_width - cx) * shrink),
                        min(float(height), cy + (y0 + region_height - cy) * shrink)))
    return regions


def frame_size(size: tuple[int, int], compare: str | None) -> tuple[int, int]:
    """The frames' (width, height): ``size``, twice as wide with a ``compare`` rendering beside it."""
    if compare not in (None, *COMPARISONS):
        raise LiifError(f"unknown comparison {compare!r}; use {', '.join(COMPARISONS)}")
    return size[0] * (2 if compare else 1), size[1]


def background_rgb(color: str | tuple[int, int, int]) -> tuple[int, int, int]:
    """``color`` (a ``#rrggbb`` hex, a name Pillow's ImageColor knows such as ``black``, or 8-bit (r, g, b)) as
    8-bit (r, g, b); else a LiifError."""
    if isinstance(color, str):
        try:
            return ImageColor.getcolor(color, "RGB")
        except ValueError:
            pass
    elif isinstance(color, (tuple, list)) and len(color) == 3 and \
            all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in color):
        return tuple(color)
    raise LiifError(f"{option('background', color)}: expected a colour such as #1a2b3c, black or white")


def over_background(picture: Picture, background: tuple[int, int, int] = (255, 255, 255)) -> Picture:
    """``picture`` composited over the 8-bit (r, g, b) ``background``, without its alpha (the colour under
    transparent pixels is anything, often black): gray stays gray over a gray background, else becomes RGB; a
    picture without alpha as it is."""
    if not picture.has_alpha:
        return picture
    top, alpha, source = picture.max_value, picture.alpha.astype(np.uint32), picture.color
    channels = source.shape[2] if len(set(background)) == 1 else 3
    color = np.empty((*source.shape[:2], channels), picture.pixels.dtype)
    for channel in range(channels):  # one channel at a time: 32-bit sums of a big photo's three are gigabytes
        under = background[channel] * top // 255  # 255 -> 65535 exactly for 16-bit pixels
        color[:, :, channel] = (source[:, :, min(channel, source.shape[2] - 1)] * alpha + under * (top - alpha)
                                + top // 2) // top
    return Picture(color, picture.icc_profile)


def keeps_alpha(output: str | os.PathLike, codec: str | None = None, pix_fmt: str | None = None) -> bool:
    """Whether a zoom to ``output`` keeps a picture's transparency: a WebP or APNG, PNG frames, a video whose pixel
    format holds alpha (``--pix-fmt yuva420p``); not a GIF, whose one level of it would fringe every soft edge."""
    from liif.video.reader import has_alpha
    from liif.video.writer import ANIMATION_FORMATS, output_kind, video_format

    path = Path(output)
    kind = output_kind(path)
    if kind == "video":
        return has_alpha(video_format(path, codec, pix_fmt)[1])
    return kind == "folder" or ANIMATION_FORMATS[path.suffix.lower()] != "GIF"


def render_frames(model: nn.Module, picture: Picture, regions: list[Region], size: tuple[int, int],
                  compare: str | None = None, precision: str = "fp32", cache: FeatureCache | None = None,
                  progress: bool = False, alpha: bool = False,
                  background: tuple[int, int, int] = (255, 255, 255)) -> Iterator[np.ndarray]:
    """Each frame (H, W, 3) uint8 (4 with ``alpha``): the pixels ``liif upscale --region R_k --size WxH`` writes (as 8-bit RGB), plain
    bicubic where the frame is below x1, with plain bicubic on the right when ``compare`` is "bicubic"; in sRGB,
    through the picture's ICC profile if it has one (no video or GIF carries a profile: a wide-gamut picture's frames
    would show the wrong colours). A picture with alpha is composited over ``background`` (8-bit RGB), or with
    ``alpha`` kept: frames (H, W, 4), the alpha resized bicubic (as ``liif upscale --alpha bicubic``)."""
    frame_size(size, compare)
    # The alpha goes through bicubic: through the model it would be a second picture in its batch, twice the work.
    alpha = alpha and picture.has_alpha
    picture = picture if alpha else over_background(picture, background)
    to_srgb = srgb_converter(picture)
    cache = cache if cache is not None else FeatureCache()
    tile = render_tile(next(model.parameters()).device)  # once: every frame cuts the grid alike, sharing windows
    bar = tqdm(regions, desc="zoom", unit="frame", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    for number, region in enumerate(bar, 1):
        target = Geometry(size=size, region=region).target(picture.pixels.shape[:2])
        check_target(target, picture)
        # Below x1 LIIF samples its continuous picture without averaging, so fine detail aliases into noise, and it
        # encodes every window the wide region reaches; bicubic averages (liif view shows these levels so too).
        below_one = size[0] < region[2] - region[0]
        bicubic = resize_bicubic(picture, target).pixels if below_one or compare == "bicubic" else None
        # the frame's own bar, under the frames'
        frame = bicubic if below_one else render_picture(
            model, picture, target, alpha="bicubic", precision=precision, tile=tile, progress=progress,
            label=f"frame {number}", cache=cache).pixels
        if compare == "bicubic":
            frame = np.concatenate([frame, bicubic], axis=1)
        color = rgb8(frame) if to_srgb is None else to_srgb(rgb8(frame))
        yield np.dstack([color, eight_bit(frame[:, :, -1])]) if alpha else color


def header_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the picture at ``path``, from its header alone; a LiifError naming the file."""
    try:
        height, width = picture_size(path)
    except LiifError as exc:
        raise LiifError(f"{path}: {exc}") from None
    return width, height


def check_not_input(picture_path: str | os.PathLike, output: str | os.PathLike) -> None:
    """Refuse an output that is the picture zoomed into (by any name or link), even with ``overwrite``."""
    source = file_id(picture_path)
    if source is not None and source == file_id(output):
        raise LiifError(f"{output} is the picture zoomed into, which is never written over")


def zoom(image: Picture | Image.Image | np.ndarray | str | os.PathLike, output: str | os.PathLike, center: tuple[float, float] | None = None,
         start: float | None = None, end: float = 16.0, frames: int = 96, fps: float = 24,
         size: tuple[int, int] = (1280, 720), compare: str | None = None,
         model: str | os.PathLike | nn.Module = DEFAULT_MODEL, device: str = "auto", precision: str = "fp32",
         overwrite: bool = False, progress: bool = False, kernel: str | None = None,
         compile: str = "none", codec: str | None = None, crf: int | None = None, preset: str | None = None,
         pix_fmt: str | None = None, planned: Callable[[list[Region]], None] | None = None,
         cache: FeatureCache | None = None, background: str | tuple[int, int, int] = "white") -> list[Region]:
    """Write a zoom into ``center`` of ``image`` to ``output`` (.mp4, .webm, .gif, .webp, or a folder of PNG
    frames; a video takes ``open_frame_writer``'s ``codec``, ``crf``, ``preset``, ``pix_fmt``); returns the regions.
    ``planned`` is given the regions once the output and the model are checked, before the first frame renders;
    ``cache`` holds the encoder features (and LIIF's tables) the frames share (None: a ``FeatureCache`` of its default
    bound). A transparent picture written where the output holds no alpha (a GIF, a plain video) is shown over
    ``background`` (``background_rgb``'s forms)."""
    from liif.video.reader import SHORTEST_GIF_DELAY_MS
    from liif.video.writer import held_bytes, open_frame_writer

    FPS.check(fps, option("fps"), LiifError)
    background = background_rgb(background)  # before the model loads
    if Path(output).suffix.lower() == ".gif" and fps * SHORTEST_GIF_DELAY_MS > 1000:
        # Its delays are hundredths of a second, and players show one of a hundredth for a tenth: above 50 fps a GIF
        # would play stuttering, at a fraction of the rate.
        raise LiifError(f"a .gif plays at most {1000 // SHORTEST_GIF_DELAY_MS} frames per second, got {option('fps')} "
                        f"{fps:g}: lower it, or write .webp or a video")
    for value, name in ((overwrite, "overwrite"), (progress, "progress")):
        flag(value, name, LiifError)  # before the model loads
    if isinstance(image, (str, os.PathLike)):
        check_not_input(image, output)
        width, height = header_size(image)  # its pixels are read once the output is accepted
    else:
        image = as_picture(image)
        height, width = image.pixels.shape[:2]
    regions = zoom_regions((width, height), size, center, start, end, frames)
    held, free = held_bytes(Path(output), frame_size(size, compare), frames), available_memory()
    if free is not None and held > free:  # else found once every frame is rendered
        raise LiifError(f"{output}: an animation is held whole in memory until written, {held / 2**30:.1f} GiB for "
                        f"{frames} frames, and only {free / 2**30:.1f} GiB is available: write a video (.mp4, .webm), "
                        f"or fewer or smaller frames")
    # The writer checks the output (there already, an odd side for yuv420p, a folder it cannot be) before the picture
    # is read and the model loads, and removes what it began should either fail.
    with open_frame_writer(output, size=frame_size(size, compare), rate=fps,
                           overwrite=overwrite, codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt) as writer:
        picture = as_picture(image)
        net = model_on(model, device, precision, kernel, compile)
        if planned is not None:
            planned(regions)
        for frame in render_frames(net, picture, regions, size, compare, precision, cache, progress,
                                   keeps_alpha(output, codec, pix_fmt), background):
            writer.write(frame)
    return regions
