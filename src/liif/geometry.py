"""Output geometry: continuous coordinates, cells, and the output size and region a request asks for.

Coordinates are pixel centres in [-1, 1], (row, col) order. A request gives exactly one of scale, size,
width or height (and optionally a region in input pixels); ``Geometry`` checks and bounds every number
once, and ``Geometry.target`` maps it to the output size, region and pixel grid of one input.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import torch

from liif.bounds import Number
from liif.errors import LiifError, option

Ranges = tuple[tuple[float, float], tuple[float, float]]
WHOLE_IMAGE: Ranges = ((-1.0, 1.0), (-1.0, 1.0))
# Above any output a machine can hold (500 MP is the default limit), and small enough that no arithmetic on
# sizes overflows: a bound for every number a request carries.
MAX_SIDE = 1 << 24
# A region's coordinates, in input pixels: no picture has a side beyond MAX_SIDE.
REGION_COORDINATE = Number(low=0, high=MAX_SIDE)


def check_sides(shape: Sequence[int]) -> None:
    """A LiifError unless every side of ``shape`` is a whole number of pixels, at least 1 (a pixel's size divides
    by the side, and a fraction of a pixel would give a grid of another size than the cell says)."""
    # Not bounds.COUNT: under torch.compile a side is a SymInt, which is no numbers.Integral but compares
    if not all(isinstance(n, (numbers.Integral, torch.SymInt)) and not isinstance(n, bool) and n >= 1
               for n in shape):
        raise LiifError(f"every side of a grid must be a whole number of pixels, at least 1, got shape {tuple(shape)}")


def make_coord(shape: Sequence[int], ranges: Sequence[tuple[float, float]] | None = None,
               flatten: bool = True, device: torch.device | str | None = None) -> torch.Tensor:
    """Pixel-centre coordinates of a grid: ``v0 + r + 2r*i`` with ``r = (v1-v0)/(2n)``, shape (H*W, 2) or (H, W, 2)."""
    check_sides(shape)
    axes = []
    for i, n in enumerate(shape):
        v0, v1 = (-1.0, 1.0) if ranges is None else ranges[i]
        r = (v1 - v0) / (2 * n)
        axes.append(v0 + r + (2 * r) * torch.arange(n, device=device).float())
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return grid.view(-1, grid.shape[-1]) if flatten else grid


def cell_size(shape: Sequence[int], ranges: Ranges = WHOLE_IMAGE) -> tuple[float, float]:
    """The cell, (pixel height, pixel width) in [-1, 1] units, of ``shape`` pixels spread over ``ranges``."""
    check_sides(shape)
    return tuple((r[1] - r[0]) / n for r, n in zip(ranges, shape))


def make_cell(coord: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The cell of an output of ``shape`` covering [-1, 1]^2, one per query of ``coord`` (..., 2), of its float type
    (a LiifError for integer coordinates, in whose type every cell would be 0)."""
    if not isinstance(coord, torch.Tensor) or not coord.is_floating_point():
        got = coord.dtype if isinstance(coord, torch.Tensor) else f"a {type(coord).__name__}"
        raise LiifError(f"coord must be a float tensor (..., 2), got {got}")
    return torch.tensor(cell_size(shape), dtype=coord.dtype, device=coord.device).expand_as(coord).clone()


def to_pixel_samples(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates (H*W, 2) and colours (H*W, C) of a (C, H, W) image, in raster order."""
    coord = make_coord(img.shape[-2:], device=img.device)
    rgb = img.reshape(img.shape[0], -1).t()
    return coord, rgb


@dataclass(frozen=True)
class Grid:
    """Output pixels: ``size`` (H, W) pixel centres spread over ``ranges`` ((y0, y1), (x0, x1)) of [-1, 1]^2."""

    size: tuple[int, int]
    ranges: Ranges = WHOLE_IMAGE

    def __post_init__(self) -> None:
        if not isinstance(self.size, (tuple, list)) or len(self.size) != 2:
            raise LiifError(f"size must be two numbers (height, width), got {self.size!r}")
        object.__setattr__(self, "size", tuple(bounded(n, "size", integer=True) for n in self.size))
        if not isinstance(self.ranges, (tuple, list)) or len(self.ranges) != 2 or not all(
                isinstance(r, (tuple, list)) and len(r) == 2 and all(finite_number(v) for v in r)
                and -1 <= r[0] < r[1] <= 1 for r in self.ranges):
            # outside [-1, 1] the model would only repeat border pixels, as --region refuses outside the picture
            raise LiifError(f"ranges must be ((y0, y1), (x0, x1)), numbers with -1 <= y0 < y1 <= 1 and "
                            f"-1 <= x0 < x1 <= 1, got {self.ranges!r}")
        object.__setattr__(self, "ranges", tuple((float(v0), float(v1)) for v0, v1 in self.ranges))

    def axis(self, dim: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Pixel-centre coordinates along ``dim`` (0: rows, 1: columns), as ``make_coord`` but computed in
        float64 before rounding to float32, so that a region's pixels get the very coordinates the same
        pixels get in a larger render: tiles of a zoom level put together equal one render of it."""
        (v0, v1), n = self.ranges[dim], self.size[dim]
        radius = (v1 - v0) / (2 * n)
        centres = v0 + radius * (2 * torch.arange(n, dtype=torch.float64) + 1)
        return centres.float().to(device)

    def cell(self) -> tuple[float, float]:
        """The cell always follows the output pixel size."""
        return cell_size(self.size, self.ranges)


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


def format_region(region: Sequence[float]) -> str:
    """``x0,y0,x1,y1`` as ``--region`` takes it, every number exact (Python's shortest round-trip form)."""
    return ",".join(repr(v) for v in region)


def round_half_up(value: float) -> int:
    """``value`` to the nearest whole number, halves up (as output sizes are rounded)."""
    return int(math.floor(value + 0.5))


def finite_number(value: object) -> bool:
    """Whether ``value`` is a real number (not a bool) within MAX_SIDE of 0: finite, and far from overflowing."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and abs(value) <= MAX_SIDE


def bounded(value: object, what: str, integer: bool = False) -> float:
    """``value`` as a finite number in (0, MAX_SIDE], a whole one if ``integer``; else a LiifError naming it."""
    if integer and isinstance(value, float) and value.is_integer():
        value = int(value)  # parsed sizes arrive as floats
    checked = Number(int if integer else float, low=0, high=MAX_SIDE, low_open=True).check(value, what, LiifError)
    return checked if integer else float(checked)


def parse_numbers(text: str, option: str, counts: tuple[int, ...], separator: str = ",") -> list[float]:
    """The numbers of ``text`` split at ``separator``; a LiifError unless there are ``counts`` of them."""
    try:
        values = [float(v) for v in text.split(separator)]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise LiifError(f"{option} {text!r}: expected {' or '.join(map(str, counts))} numbers separated by "
                        f"{separator!r}")
    return values


@dataclass(frozen=True)
class Geometry:
    """What the output should be: exactly one of ``scale`` (S or (SY, SX)), ``size`` (W, H), ``width``,
    ``height``, and an optional ``region`` (x0, y0, x1, y1) in input pixels (default: the whole input)."""

    scale: float | tuple[float, float] | None = None
    size: tuple[int, int] | None = None
    width: int | None = None
    height: int | None = None
    region: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        names = ("scale", "size", "width", "height")
        if sum(getattr(self, name) is not None for name in names) != 1:
            raise LiifError(f"give exactly one of {', '.join(map(option, names[:3]))} or {option(names[3])}")
        if self.scale is not None:
            pair = tuple(self.scale) if isinstance(self.scale, (tuple, list)) else (self.scale, self.scale)
            if len(pair) != 2:
                raise LiifError(f"{option('scale')} must be one number or two (sy, sx), got {len(pair)}")
            object.__setattr__(self, "scale", tuple(bounded(v, option("scale")) for v in pair))
        if self.size is not None:
            if not isinstance(self.size, (tuple, list)) or len(self.size) != 2:
                raise LiifError(f"{option('size')} must be two numbers (width, height), got {self.size!r}")
            object.__setattr__(self, "size", tuple(bounded(v, option("size"), integer=True) for v in self.size))
        for name in ("width", "height"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, bounded(getattr(self, name), option(name), integer=True))
        if self.region is not None:
            if not isinstance(self.region, (tuple, list)) or len(self.region) != 4:
                raise LiifError(f"{option('region')} must be four numbers x0,y0,x1,y1, got {self.region!r}")
            what = f"each coordinate of {option('region')}"
            object.__setattr__(self, "region", tuple(float(REGION_COORDINATE.check(v, what, LiifError))
                                                     for v in self.region))

    @classmethod
    def parse(cls, scale: str | None = None, size: str | None = None, width: str | None = None,
              height: str | None = None, region: str | None = None) -> Geometry:
        """A Geometry from command-line strings: ``3.5`` or ``2,3``; ``640x480``; ``2000``; ``x0,y0,x1,y1``."""
        values = parse_numbers(scale, option("scale"), (1, 2)) if scale is not None else None
        return cls(scale=None if values is None else values[0] if len(values) == 1 else tuple(values),
                   size=None if size is None else tuple(parse_numbers(size.lower(), option("size"), (2,), "x")),
                   width=None if width is None else parse_numbers(width, option("width"), (1,))[0],
                   height=None if height is None else parse_numbers(height, option("height"), (1,))[0],
                   region=None if region is None else tuple(parse_numbers(region, option("region"), (4,))))

    def box(self, input_shape: tuple[int, int]) -> tuple[float, float, float, float]:
        """The region (x0, y0, x1, y1), checked to lie inside an (h, w) input and not be empty."""
        h, w = input_shape
        if self.region is None:
            return 0.0, 0.0, float(w), float(h)
        x0, y0, x1, y1 = self.region
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise LiifError(f"{option('region')} {x0:g},{y0:g},{x1:g},{y1:g} must satisfy 0 <= x0 < x1 <= {w} "
                            f"and 0 <= y0 < y1 <= {h} (the input is {w}x{h})")
        return self.region

    def target(self, input_shape: tuple[int, int]) -> Target:
        """The output size (round half up per axis) and region for an input of (h, w) pixels."""
        box = self.box(input_shape)
        region_h, region_w = box[3] - box[1], box[2] - box[0]
        if self.scale is not None:
            sy, sx = self.scale
            out = (round_half_up(region_h * sy), round_half_up(region_w * sx))
        elif self.size is not None:
            out = (self.size[1], self.size[0])
        elif self.width is not None:
            out = (round_half_up(self.width * region_h / region_w), self.width)
        else:
            out = (self.height, round_half_up(self.height * region_w / region_h))
        if not all(1 <= n <= MAX_SIDE for n in out):
            raise LiifError(f"the output would be {out[1]}x{out[0]} pixels; each side must be 1 to {MAX_SIDE}")
        return Target(out, box)
