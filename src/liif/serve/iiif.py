"""The IIIF Image API 3.0 as pure functions: a URL's region, size, rotation, quality and format to an
``ImageRequest`` in input pixels, and a picture's info.json. Every refusal is an ``IIIFError`` with the HTTP
status and a one-line reason.

Regions are kept in input pixels as floats (``pct:`` regions need not fall on pixels): the continuous image
renders any region exactly, and ``x,y,w,h`` at ``^W,H`` is the same request as
``liif upscale --region x,y,x+w,y+h --size WxH``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from liif import imageio
from liif.bounds import Number
from liif.errors import LiifError
from liif.geometry import MAX_SIDE, format_region, round_half_up

CONTEXT = "http://iiif.io/api/image/3/context.json"
JSON_LD = f'application/ld+json;profile="{CONTEXT}"'
QUALITIES = ("default", "color", "gray", "bitonal")
FORMATS = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
# What the server does beyond level 2's required features (level 2 ones are implied by the profile).
EXTRA_FEATURES = ["sizeUpscaling", "mirroring", "regionSquare", "profileLinkHeader"]
# ASCII digits only: re's \d also takes other scripts' digits ('١'), which IIIF's grammar does not
WHOLE = r"[0-9]+"
NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
# A size's numbers: any above MAX_SIDE is over every limit, and bounding them keeps the arithmetic on them finite
SIZE_NUMBER = Number(low=0, high=MAX_SIDE)
# The narrowest region side, in input pixels: no scale Geometry takes (at most MAX_SIDE) makes a pixel of less,
# and above it the region's aspect and the scales to the limits stay finite
MIN_REGION_SIDE = 1 / MAX_SIDE
# The most of a request's text a reason quotes: a 5000-digit size must not make a 5000-character reason
QUOTED_CHARS = 40


class IIIFError(LiifError):
    """A request the server refuses: ``status`` (400, 404) and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def quoted(text: str) -> str:
    """A request's ``text`` as every reason quotes it: its repr, cut after ``QUOTED_CHARS`` characters with an
    ellipsis and its length."""
    if len(text) <= QUOTED_CHARS:
        return repr(text)
    return f"{text[:QUOTED_CHARS]!r}... ({len(text)} characters)"


@dataclass(frozen=True)
class Limits:
    """The largest output: width, height and area in pixels (info.json's maxWidth, maxHeight, maxArea)."""

    max_width: int
    max_height: int
    max_area: int

    @classmethod
    def for_picture(cls, width: int, height: int, max_scale: float, max_pixels: int) -> Limits:
        """``max_scale`` times the picture's own size, within ``max_pixels``."""
        max_width, max_height = max(1, math.floor(width * max_scale)), max(1, math.floor(height * max_scale))
        return cls(max_width, max_height, min(max_width * max_height, max_pixels))

    def admit(self, size: tuple[int, int]) -> bool:
        """Whether an output of ``size`` (W, H) is within the limits."""
        return size[0] <= self.max_width and size[1] <= self.max_height and size[0] * size[1] <= self.max_area


@dataclass(frozen=True)
class ImageRequest:
    """One image request: ``region`` (x0, y0, x1, y1) in input pixels, ``size`` (W, H) of the output before
    rotation, then mirroring, ``rotation`` (0, 90, 180, 270 clockwise), ``quality`` and ``format``."""

    region: tuple[float, float, float, float]
    size: tuple[int, int]
    mirror: bool = False
    rotation: int = 0
    quality: str = "default"
    format: str = "png"

    @property
    def downscale(self) -> bool:
        """Whether the output is smaller than the region: no side larger, one smaller."""
        width, height = self.region[2] - self.region[0], self.region[3] - self.region[1]
        return self.size[0] <= width and self.size[1] <= height and (self.size[0] < width or self.size[1] < height)

    @property
    def media_type(self) -> str:
        return FORMATS[self.format]

    @property
    def encoder(self) -> str:
        """Pillow's name of the format."""
        return imageio.FORMATS["." + self.format]

    def key(self) -> str:
        """A canonical text of the request, the same for every URL that asks for the same pixels."""
        mirror = "!" if self.mirror else ""
        return f"{format_region(self.region)}/{self.size[0]},{self.size[1]}/{mirror}{self.rotation}/{self.quality}.{self.format}"


def numbers(text: str, count: int, forms: str, integer: bool = True) -> list[float]:
    """The ``count`` comma-separated non-negative numbers (whole ones if ``integer``) of ``text``, or a 400 naming
    the parameter's ``forms``."""
    parts = text.split(",")
    if len(parts) != count or not all(re.fullmatch(WHOLE if integer else NUMBER, p) for p in parts):
        raise IIIFError(400, forms)
    return [float(p) for p in parts]


def parse_region(text: str, width: int, height: int) -> tuple[float, float, float, float]:
    """``full``, ``square``, ``x,y,w,h`` or ``pct:x,y,w,h`` to (x0, y0, x1, y1), cut to the picture."""
    if text == "full":
        return 0.0, 0.0, float(width), float(height)
    if text == "square":
        side = min(width, height)
        x0, y0 = (width - side) // 2, (height - side) // 2
        return float(x0), float(y0), float(x0 + side), float(y0 + side)
    forms = f"region {quoted(text)}: expected full, square, x,y,w,h (whole numbers) or pct:x,y,w,h"
    if text.startswith("pct:"):
        px, py, pw, ph = numbers(text[4:], 4, forms, integer=False)
        x, y, w, h = px * width / 100, py * height / 100, pw * width / 100, ph * height / 100
    else:
        x, y, w, h = numbers(text, 4, forms)
    if w <= 0 or h <= 0:
        raise IIIFError(400, f"region {quoted(text)} has no width or no height")
    if x >= width or y >= height:
        raise IIIFError(400, f"region {quoted(text)} lies outside the {width}x{height} picture")
    x1, y1 = min(x + w, float(width)), min(y + h, float(height))
    if x1 - x < MIN_REGION_SIDE or y1 - y < MIN_REGION_SIDE:
        raise IIIFError(400, f"region {quoted(text)} is narrower than 1/{MAX_SIDE} of a pixel")
    return x, y, x1, y1


def size_numbers(text: str, body: str, count: int, limits: Limits, integer: bool = True) -> list[float]:
    """The ``count`` numbers of a size's ``body``; a 400 quoting ``text`` if malformed or above every limit."""
    forms = (f"size {quoted(text)}: expected max, w,, ,h, pct:n, w,h or !w,h (w and h whole numbers), each with a "
             f"leading ^ to upscale")
    values = numbers(body, count, forms, integer)
    if not all(SIZE_NUMBER.fits(v) for v in values):
        raise IIIFError(400, f"size {quoted(text)} is above the limit of {limits.max_width}x{limits.max_height} "
                             f"and {limits.max_area} pixels")
    return values


def parse_size(text: str, region_width: float, region_height: float, limits: Limits) -> tuple[int, int]:
    """A size (``max``, ``w,``, ``,h``, ``pct:n``, ``w,h``, ``!w,h``, each with an optional ``^``) to (W, H)
    for a region of that many input pixels; upscaling only with ``^``, never beyond ``limits``."""
    upscale = text.startswith("^")
    body = text[1:] if upscale else text
    aspect = region_width / region_height
    own = (max(1, round_half_up(region_width)), max(1, round_half_up(region_height)))
    top, largest = largest_size(region_width, region_height, own, upscale, limits)
    if body == "max":
        return check_size(text, largest, own, upscale, limits)
    if body.startswith("pct:"):
        (percent,) = size_numbers(text, body[4:], 1, limits, integer=False)
        if percent <= 0:
            raise IIIFError(400, f"size {quoted(text)} must be above 0 percent")
        if percent > 100 and not upscale:
            raise IIIFError(400, f"size {quoted(text)} is above 100 percent: upscaling needs ^, as in "
                                 f"{quoted('^' + text)}")
        size = (round_half_up(region_width * percent / 100), round_half_up(region_height * percent / 100))
    elif re.fullmatch(WHOLE + ",", body):
        (width,) = size_numbers(text, body[:-1], 1, limits)
        size = (int(width), round_half_up(width / aspect))
    elif re.fullmatch("," + WHOLE, body):
        (height,) = size_numbers(text, body[1:], 1, limits)
        size = (round_half_up(height * aspect), int(height))
    elif body.startswith("!"):
        width, height = (int(v) for v in size_numbers(text, body[1:], 2, limits))
        fit = min(width / region_width, height / region_height)
        size = (min(width, round_half_up(region_width * fit)), min(height, round_half_up(region_height * fit)))
        # the spec's best fit is as large as possible but not larger than w,h, the region (without ^) or the
        # limits: where those bind first, it is max's size, not a refusal
        if fit >= top or not limits.admit(size):
            size = largest
    else:
        size = tuple(int(v) for v in size_numbers(text, body, 2, limits))
    return check_size(text, size, own, upscale, limits)


def largest_size(region_width: float, region_height: float, own: tuple[int, int], upscale: bool,
                 limits: Limits) -> tuple[float, tuple[int, int]]:
    """``max``'s scale and size for a region: its ``own`` size, or with ``upscale`` the largest within ``limits``."""
    scale = min(1.0 if not upscale else math.inf, limits.max_width / region_width,
                limits.max_height / region_height, math.sqrt(limits.max_area / (region_width * region_height)))
    if scale == 1.0:
        return scale, own
    width, height = max(1, math.floor(region_width * scale)), max(1, math.floor(region_height * scale))
    # a side raised to one pixel (a thin region), or float rounding, must not take the other over the area
    width = min(width, max(1, limits.max_area // height))
    return scale, (width, min(height, max(1, limits.max_area // width)))


def check_size(text: str, size: tuple[int, int], own: tuple[int, int], upscale: bool,
               limits: Limits) -> tuple[int, int]:
    """``size`` if it is not empty, larger than the ``own`` region only with ``upscale`` (^), and within
    ``limits``; else a 400 quoting the request's ``text``."""
    width, height = size
    if width < 1 or height < 1:
        raise IIIFError(400, f"size {quoted(text)} gives an empty {width}x{height} output")
    if not upscale and (width > own[0] or height > own[1]):
        raise IIIFError(400, f"size {quoted(text)} ({width}x{height}) is larger than the {own[0]}x{own[1]} "
                             f"region: upscaling needs ^, as in {quoted('^' + text)}")
    if not limits.admit(size):
        raise IIIFError(400, f"size {quoted(text)} ({width}x{height}) is above the limit of {limits.max_width}x"
                             f"{limits.max_height} and {limits.max_area} pixels")
    return width, height


def parse_rotation(text: str) -> tuple[bool, int]:
    """A rotation, a number of degrees from 0 to 360 with an optional leading ``!`` (mirror first), to (mirror,
    0, 90, 180 or 270): this server rotates by multiples of 90 (360 is 0)."""
    mirror = text.startswith("!")
    degrees = text[1:] if mirror else text
    if not re.fullmatch(NUMBER, degrees) or float(degrees) > 360:
        raise IIIFError(400, f"rotation {quoted(text)}: expected a number of degrees from 0 to 360, optionally "
                             f"after ! to mirror")
    if float(degrees) % 90:
        raise IIIFError(400, f"rotation {quoted(text)}: this server rotates by multiples of 90 degrees only")
    return mirror, int(float(degrees)) % 360


def parse_quality_format(text: str) -> tuple[str, str]:
    """``quality.format`` to (quality, format)."""
    quality, dot, fmt = text.rpartition(".")
    if not dot or quality not in QUALITIES:
        raise IIIFError(400, f"quality {quoted(quality or text)}: expected one of {', '.join(QUALITIES)}")
    if fmt not in FORMATS:
        raise IIIFError(400, f"format {quoted(fmt)}: expected one of {', '.join(FORMATS)}")
    return quality, fmt


def parse_request(region: str, size: str, rotation: str, quality_format: str, width: int, height: int,
                  limits: Limits) -> ImageRequest:
    """The four path parameters of an image request, for a picture of ``width`` x ``height`` pixels."""
    box = parse_region(region, width, height)
    out = parse_size(size, box[2] - box[0], box[3] - box[1], limits)
    mirror, degrees = parse_rotation(rotation)
    quality, fmt = parse_quality_format(quality_format)
    request = ImageRequest(box, out, mirror, degrees, quality, fmt)
    try:  # refused before rendering, not once encoding fails; a jpg answer drops alpha, so colour alone counts
        imageio.check_encodable(request.encoder, (out[1], out[0], 3), instead="ask for png")
    except LiifError as exc:
        raise IIIFError(400, f"size {quoted(size)}: {exc}") from None
    return request


TILE = 256  # the side of the tiles info.json offers (less under a small pixel limit): the viewer reads it there


def tile_side(limits: Limits) -> int:
    """The side of the tiles offered: ``TILE``, halved until a tile is within the largest answer's area."""
    side = TILE
    while side > 1 and side * side > limits.max_area:
        side //= 2
    return side


def scale_factors(width: int, height: int, tile: int) -> list[int]:
    """Powers of two, from 1 until the whole picture fits in one tile."""
    factors = [1]
    while max(width, height) / factors[-1] > tile:
        factors.append(factors[-1] * 2)
    return factors


def info_media_type(accept: str | None) -> str:
    """info.json's media type for a request's ``Accept`` header: JSON-LD with the context as its profile (the
    spec's default, also without the header), or plain JSON where the client prefers it."""
    ranges = accept or "*/*"
    return "application/json" if accepted("application/json", ranges) > accepted("application/ld+json", ranges) \
        else JSON_LD


def accepted(media_type: str, accept: str) -> float:
    """The quality ``accept`` gives ``media_type``: that of its most specific range naming it (the type itself,
    then type/*, then */*), 0 if none does."""
    specificity = {media_type: 2, media_type.split("/")[0] + "/*": 1, "*/*": 0}
    best, quality = -1, 0.0
    for item in accept.split(","):
        name, *parameters = (part.strip().lower() for part in item.split(";"))
        rank = specificity.get(name, -1)
        if rank > best:
            weights = [p[2:] for p in parameters if p.startswith("q=")]
            # a malformed weight is ignored, as if the range had none
            weight = weights[0] if weights and re.fullmatch(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?", weights[0]) else "1"
            best, quality = rank, float(weight)
    return quality


def info_json(base_uri: str, width: int, height: int, limits: Limits, color: bool = True) -> dict:
    """The info.json of a picture served at ``base_uri``: its own size, the upscaled limits, the tiles, and the
    qualities beyond ``default`` (``color`` only for a ``color`` picture: a gray one has none to give)."""
    tile = tile_side(limits)
    return {
        "@context": CONTEXT,
        "id": base_uri,
        "type": "ImageService3",
        "protocol": "http://iiif.io/api/image",
        "profile": "level2",
        "width": width,
        "height": height,
        "maxWidth": limits.max_width,
        "maxHeight": limits.max_height,
        "maxArea": limits.max_area,
        "tiles": [{"width": tile, "height": tile, "scaleFactors": scale_factors(width, height, tile)}],
        "extraQualities": [quality for quality in QUALITIES[1:] if color or quality != "color"],
        "extraFormats": ["webp"],
        "extraFeatures": EXTRA_FEATURES,
    }
