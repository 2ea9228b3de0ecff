"""Render a continuous-image model on a pixel grid in bounded memory: pictures in [0, 1] in, [0, 1] out.

The latent grid is cut into tiles of ``tile`` x ``tile`` latents. An output pixel belongs to the tile
holding the latent under its centre; its query reaches at most ``model.reach`` latents further,
so each tile builds latents for itself plus that border, and encodes the input with a margin of
``model.receptive_radius`` pixels around them, which makes every latent it uses exactly the latent of
the whole image. Only that window of the input becomes floats in the model's space (``Source``), so time
and memory depend on the tile and the block, never on the image size. The renderer
uses only the ``ImplicitModel`` interface, so any decoder that implements it renders, tiles and
self-ensembles the same way.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import weakref
from dataclasses import dataclass
from typing import Callable, Hashable, Iterator, Sequence

import numpy as np
import torch

from liif.bounds import COUNT, flag
from liif.errors import LiifError, option
from liif.geometry import WHOLE_IMAGE, Grid, Ranges
from liif.lru import ByteLRU
from liif.models.implicit import ImplicitModel, renderable
from liif.normalization import DataNorm, float_pixels
from liif.runtime import check_fits, render_tile


@dataclass(frozen=True)
class Symmetry:
    """One of the 8 flips/transposes of the plane: flip rows, flip columns, then swap the axes."""

    flip_y: bool = False
    flip_x: bool = False
    transpose: bool = False

    def image(self, x: torch.Tensor) -> torch.Tensor:
        dims = [d for d, flip in ((-2, self.flip_y), (-1, self.flip_x)) if flip]
        x = x.flip(dims) if dims else x
        return x.transpose(-2, -1) if self.transpose else x

    def window(self, rows: tuple[int, int], cols: tuple[int, int], shape: tuple[int, int]
               ) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """Where the window ``rows`` x ``cols`` of a grid of ``shape`` lands: (rows, cols, shape)."""
        if self.flip_y:
            rows = (shape[0] - rows[1], shape[0] - rows[0])
        if self.flip_x:
            cols = (shape[1] - cols[1], shape[1] - cols[0])
        return (cols, rows, shape[::-1]) if self.transpose else (rows, cols, shape)

    def coord(self, coord: torch.Tensor) -> torch.Tensor:
        """(row, col) coordinates (..., 2) mapped the way ``image`` maps pixels."""
        sign = torch.tensor([-1.0 if self.flip_y else 1.0, -1.0 if self.flip_x else 1.0],
                            dtype=coord.dtype, device=coord.device)
        coord = coord * sign
        return coord.flip(-1) if self.transpose else coord

    def cell(self, cell: torch.Tensor) -> torch.Tensor:
        return cell.flip(-1) if self.transpose else cell


IDENTITY = (Symmetry(),)
ALL_SYMMETRIES = tuple(Symmetry(fy, fx, t) for t in (False, True) for fy in (False, True) for fx in (False, True))


FEATURE_CACHE_BYTES = 512 << 20  # a FeatureCache's default bound: 29 windows of 256x256 latents of 64 channels


def tensor_bytes(tensor: torch.Tensor) -> int:
    """The bytes of ``tensor``'s values."""
    return tensor.element_size() * tensor.nelement()


def latents_bytes(latents: object) -> int:
    """The bytes of the tensors a model's latents hold (a dataclass of them: ``TableLatents``)."""
    return sum(tensor_bytes(value) for value in vars(latents).values() if isinstance(value, torch.Tensor))


class FeatureCache:
    """Encoder features of render windows, and the latents a windowed model makes of them (LIIF's per-latent
    first-layer tables), kept in LRUs bounded together in bytes. The renderer cuts the latent grid at multiples of
    a power-of-two tile side, so renders of one picture at nearby zooms (server tiles, zoom frames) ask for the
    same windows, and each window is encoded, and its latents made, once. A hit returns what the model gave for
    that very window, so rendering with the cache equals rendering without it, bit for bit.

    Features come first: latents are kept in the room features leave, as a window's tables take four times its
    features' bytes (LIIF: 256 channels to 64) but cost a fraction of encoding it."""

    def __init__(self, max_bytes: int = FEATURE_CACHE_BYTES) -> None:
        self.entries: ByteLRU[torch.Tensor] = ByteLRU(max_bytes, tensor_bytes)
        self.latent_entries: ByteLRU[object] = ByteLRU(self.entries.max_bytes, latents_bytes)
        self.encoded = 0  # windows encoded so far: one per miss
        self.latents_made = 0  # windows whose latents were made so far: one per miss

    def features(self, key: Hashable, encode: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The features of the window ``key`` names: cached, or ``encode()`` once."""
        feat = self.entries.get(key)
        if feat is None:
            feat = encode().clone(memory_format=torch.contiguous_format)  # a view would keep its whole window alive
            self.encoded += 1
            self.entries.put(key, feat)
            self.latent_entries.resize(self.entries.max_bytes - self.entries.bytes)
        return feat

    def latents(self, key: Hashable, make: Callable[[], object]) -> object:
        """The latents of the window ``key`` names: cached, or ``make()`` once (kept while there is room)."""
        latents = self.latent_entries.get(key)
        if latents is None:
            latents = make()
            self.latents_made += 1
            self.latent_entries.put(key, latents)
        return latents


# A number per model object for as long as it lives: unlike id(), never reused by a later model.
MODEL_TOKENS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
NEXT_TOKEN = itertools.count()


def model_token(model: ImplicitModel) -> int:
    """The number ``model`` holds in ``MODEL_TOKENS`` (given on first use)."""
    if model not in MODEL_TOKENS:
        MODEL_TOKENS[model] = next(NEXT_TOKEN)
    return MODEL_TOKENS[model]


class Source:
    """The pictures (B, 3, h, w) in [0, 1] a render reads, a window at a time: only the windows it touches become
    floats in the model's space, so its time and memory follow them, not the picture's size."""

    def __init__(self, pixels: torch.Tensor | Sequence[np.ndarray], device: torch.device | str = "cpu",
                 max_value: int = 1, name: Hashable | None = None) -> None:
        """``pixels``: a float tensor (B, 3, h, w) on its device, or B integer planes (h, w, 1 or 3) over
        ``max_value`` (one channel stands for three) for ``device``; ``name`` says what they hold (None: a digest)."""
        self.pixels, self.max_value, self.name = pixels, max_value, name
        tensor = isinstance(pixels, torch.Tensor)
        self.batch = pixels.shape[0] if tensor else len(pixels)
        self.shape = tuple(pixels.shape[-2:] if tensor else pixels[0].shape[:2])
        self.device = pixels.device if tensor else torch.device(device)
        self.dtype = pixels.dtype if tensor else torch.float32

    def window(self, rows: tuple[int, int], cols: tuple[int, int], norm: DataNorm) -> torch.Tensor:
        """Pixels ``rows`` x ``cols`` (B, 3, hw, ww) in the model's space ``norm`` gives, on the device. Cropped
        first: each step is elementwise, so the window is the same crop of the whole picture converted, bit for bit."""
        (r0, r1), (c0, c1) = rows, cols
        if isinstance(self.pixels, torch.Tensor):
            pixels = self.pixels[:, :, r0:r1, c0:c1]
        else:
            pixels = torch.stack([torch.from_numpy(plane[r0:r1, c0:c1].astype(np.float32) / self.max_value)
                                  .permute(2, 0, 1).expand(3, -1, -1) for plane in self.pixels]).to(self.device)
        return norm.to_model(pixels)

    @functools.cached_property
    def key(self) -> Hashable:
        """What the pixels are: ``name``, else a digest of their values, types and shapes, computed once."""
        if self.name is not None:
            return self.name
        arrays = [self.pixels.detach().cpu().contiguous().numpy()] if isinstance(self.pixels, torch.Tensor) \
            else self.pixels
        digest = hashlib.blake2b(digest_size=16)
        for array in arrays:
            digest.update(f"{array.shape} {array.dtype}".encode())
            digest.update(np.ascontiguousarray(array).data)
        return digest.hexdigest()


def input_key(model: ImplicitModel, source: Source) -> tuple:
    """What makes encoder features of ``source`` reusable: the model, the pictures' content (``Source.key``), the
    precision."""
    device = source.device.type
    precision = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else source.dtype
    return model_token(model), source.batch, source.shape, source.key, str(precision)


def latent_bins(axis: torch.Tensor, n: int) -> torch.Tensor:
    """The latent (of ``n``) under each output pixel centre of ``axis``."""
    return ((axis.double() + 1) * (n / 2)).floor().long().clamp(0, n - 1)


def tile_spans(bins: torch.Tensor, tile: int) -> list[tuple[int, int, int, int]]:
    """(first latent, end latent, first output pixel, end output pixel) of each non-empty tile along one axis."""
    spans = []
    owner = bins // tile
    for k in torch.unique_consecutive(owner).tolist():
        pixels = torch.nonzero(owner == k).view(-1)
        spans.append((k * tile, (k + 1) * tile, int(pixels[0]), int(pixels[-1]) + 1))
    return spans


def pick_tile(model: ImplicitModel, grid: Grid, latent_shape: tuple[int, int], tile: int, block_pixels: int) -> int:
    """A tile side, in latents, whose output block holds at most ``block_pixels`` pixels (the whole grid for a
    model whose latents cannot cover windows): ``tile``, or a power of two below it, so that renders at
    nearby output densities cut the grid the same way and share encoder windows (``FeatureCache``)."""
    if not model.windowed:
        return max(latent_shape)
    density = 1.0
    for dim in (0, 1):
        span = latent_shape[dim] * (grid.ranges[dim][1] - grid.ranges[dim][0]) / 2
        density *= grid.size[dim] / span
    side = max(1, int(math.sqrt(block_pixels / density)))
    return min(tile, 1 << (side.bit_length() - 1))


def checked_tile(tile: int | None) -> int | None:
    """``tile`` (None: the device's) if it is a whole number of latents, at least one; else a LiifError."""
    return tile if tile is None else COUNT.check(tile, option("tile"), LiifError)


def clip(lo: int, hi: int, n: int) -> tuple[int, int]:
    """[lo, hi) cut to [0, n)."""
    return max(lo, 0), min(hi, n)


@torch.no_grad()
def render_tiles(model: ImplicitModel, source: Source, grid: Grid, tile: int | None = None,
                 chunk_size: int | None = None, self_ensemble: bool = False, block_pixels: int = 1 << 22,
                 cache: FeatureCache | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield (row, col, block): ``block`` (B, C, hb, wb) in [0, 1] is the output of ``grid`` at (row, col) for
    the pictures of ``source``; blocks cover the grid once, tile by tile (``tile`` latents a side at most; None: the
    device's ``render_tile``). With a ``cache``, encoder features come from (and go to) it."""
    symmetries = ALL_SYMMETRIES if flag(self_ensemble, "self_ensemble", LiifError) else IDENTITY
    key = None if cache is None else input_key(model, source)
    h, w = source.shape
    device = source.device
    if checked_tile(tile) is None:
        tile = render_tile(device, source.batch)
    side = pick_tile(model, grid, (h, w), tile, block_pixels)
    axes = [grid.axis(dim, device) for dim in (0, 1)]
    row_spans = tile_spans(latent_bins(axes[0], h), side)
    col_spans = tile_spans(latent_bins(axes[1], w), side)
    cell_hw = torch.tensor(grid.cell(), device=device)
    reach = model.reach(grid.cell(), (h, w))
    for r0, r1, y0, y1 in row_spans:
        for c0, c1, x0, x1 in col_spans:
            latent_win = (clip(r0 - reach, r1 + reach, h), clip(c0 - reach, c1 + reach, w))
            coord = torch.stack(torch.meshgrid(axes[0][y0:y1], axes[1][x0:x1], indexing="ij"), dim=-1)
            block = sum(render_window(model, source, latent_win, coord, cell_hw, chunk_size, symmetry,
                                      cache, None if key is None else (key, symmetry))
                        for symmetry in symmetries) / len(symmetries)
            yield y0, x0, model.data_norm.to_pixels(block, channel_dim=1)


def render_window(model: ImplicitModel, source: Source, latent_win: tuple[tuple[int, int], tuple[int, int]],
                  coord: torch.Tensor, cell_hw: torch.Tensor, chunk_size: int | None,
                  symmetry: Symmetry, cache: FeatureCache | None = None, key: Hashable = None) -> torch.Tensor:
    """The model-space output (B, C, hb, wb) at ``coord`` (hb, wb, 2), from latents of ``latent_win`` of
    ``symmetry`` of the pictures of ``source``; features from ``cache`` under ``key`` when given."""
    shape = source.shape
    halo, radius = model.feature_halo, model.receptive_radius
    (r0, r1), (c0, c1) = latent_win
    feat_rows, feat_cols = clip(r0 - halo, r1 + halo, shape[0]), clip(c0 - halo, c1 + halo, shape[1])
    window = clip(r0 - radius, r1 + radius, shape[0]), clip(c0 - radius, c1 + radius, shape[1])
    in_rows, in_cols, _ = symmetry.window(*window, shape)
    feat_rows, feat_cols, grid_shape = symmetry.window(feat_rows, feat_cols, shape)

    def encode() -> torch.Tensor:
        window_image = symmetry.image(source.window(*window, model.data_norm))  # here: a cache hit converts nothing
        feat = model.encode(window_image)
        if feat.shape[-2:] != window_image.shape[-2:]:  # tiles and latents are cut in input pixels
            raise LiifError(f"rendering needs an encoder that keeps the input's size (no_upsampling), got "
                            f"{tuple(feat.shape[-2:])} from {tuple(window_image.shape[-2:])}")
        return feat[:, :, feat_rows[0] - in_rows[0]:feat_rows[1] - in_rows[0],
                    feat_cols[0] - in_cols[0]:feat_cols[1] - in_cols[0]]

    def make_latents() -> object:
        feat = encode() if cache is None else cache.features(window_key, encode)
        return model.latents(feat, grid_shape=grid_shape, origin=(feat_rows[0], feat_cols[0]))

    window_key = (key, in_rows, in_cols, feat_rows, feat_cols)
    # A whole-grid model's latents are its features as they are: nothing to keep twice.
    latents = cache.latents(window_key, make_latents) if cache is not None and model.windowed else make_latents()

    batch = source.batch
    rows, cols = coord.shape[:2]
    coord = symmetry.coord(coord.reshape(1, -1, 2)).expand(batch, -1, -1)
    cell = symmetry.cell(cell_hw).view(1, 1, 2).expand_as(coord)
    pred = model.query_chunked(latents, coord, cell, chunk_size)
    return pred.view(batch, rows, cols, -1).permute(0, 3, 1, 2)


def checked_pictures(image: object) -> torch.Tensor:
    """``image`` as float32 pictures (B, 3, h, w) in [0, 1]; anything else (8-bit values, channels last, NaN) would
    render wrong or fail deep in torch, so it is a LiifError saying what it got."""
    if not isinstance(image, torch.Tensor):
        raise LiifError(f"pictures must be a (B, 3, h, w) tensor in [0, 1], got a {type(image).__name__}")
    if image.dim() != 4 or image.shape[1] != 3 or image.numel() == 0:
        layout = " (channels last? use .permute(0, 3, 1, 2))" if image.dim() == 4 and image.shape[-1] == 3 else ""
        raise LiifError(f"pictures must be a (B, 3, h, w) tensor in [0, 1], got shape {tuple(image.shape)}{layout}")
    float_pixels(image)
    image = image.float()
    low, high = (float(v) for v in torch.aminmax(image))
    if not 0 <= low <= high <= 1:  # NaN fails too
        raise LiifError(f"pictures must hold values in [0, 1], got {low:g} to {high:g}")
    return image


@torch.no_grad()
def render(model: ImplicitModel, image: torch.Tensor, size: tuple[int, int], ranges: Ranges = WHOLE_IMAGE,
           chunk_size: int | None = None, tile: int | None = None, self_ensemble: bool = False,
           cache: FeatureCache | None = None) -> torch.Tensor:
    """The (B, C, H, W) picture in [0, 1] that ``model`` renders of pictures ``image`` (B, 3, h, w) in [0, 1]
    at output ``size`` (H, W); ``ranges`` ((y0, y1), (x0, x1)) in [-1, 1] selects a region; ``cache`` shares
    encoder features between calls."""
    grid = Grid(size, ranges)
    pictures = checked_pictures(image)
    (height, width), batch = grid.size, pictures.shape[0]
    # at least three float32 channels: checked before any tile, as a tile's own block may already not fit
    check_fits(batch * 3 * height * width * 4, f"the {width}x{height} output of {batch} picture(s)", pictures.device)
    out = None
    for row, col, block in render_tiles(renderable(model), Source(pictures), grid, tile, chunk_size,
                                        self_ensemble, cache=cache):
        if out is None:
            out = block.new_empty(*block.shape[:2], *grid.size)
        out[:, :, row:row + block.shape[2], col:col + block.shape[3]] = block
    return out
