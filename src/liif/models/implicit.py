"""The interface between a continuous-image model and the renderer: encode, latents of a window, query.

A decoder plugs into the tiled renderer by subclassing ``ImplicitModel``: the renderer reads only the
members defined here, so LIIF, MetaSR or LTE render, tile and self-ensemble the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from liif.bounds import COUNT
from liif.normalization import DataNorm
from liif.errors import LiifError
from liif.runtime import COMPILE_MODES, query_chunk

QUERY_PATHS = ("fast", "reference")


@dataclass(frozen=True)
class LatentWindow:
    """A window of the latent grid: the whole grid's ``grid_shape`` (h, w), the window's top-left latent
    ``origin`` and its ``shape`` (rows, cols)."""

    grid_shape: tuple[int, int]
    origin: tuple[int, int]
    shape: tuple[int, int]

    def rows_of(self, iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
        """Flat rows of a (B * rows * cols, D) table for global latent indices shaped (..., B, Q)."""
        rows, cols = self.shape
        local_y, local_x = iy - self.origin[0], ix - self.origin[1]
        # Indices are clamped to the grid, so only a true window can be left; skipping the check on the whole
        # grid saves a device-to-host sync per chunk, and skipping it when compiling a graph break (the renderer,
        # which compiled queries serve, never reaches beyond its windows).
        checked = self.shape != self.grid_shape and not torch.compiler.is_compiling()
        if checked and bool((local_y.min() < 0) | (local_y.max() >= rows) | (local_x.min() < 0)
                            | (local_x.max() >= cols)):
            raise ValueError("a query reaches a latent outside the window these latents cover")
        batch_offset = torch.arange(iy.shape[-2], device=iy.device).unsqueeze(-1) * (rows * cols)
        return (local_y * cols + local_x + batch_offset).reshape(-1)


@dataclass
class FeatureLatents:
    """A reference path's latents: the whole feature map (B, C, h, w)."""

    feat: torch.Tensor


@dataclass
class TableLatents:
    """A fast path's latents: per-latent values (B, rows*cols, D), row-major over ``window``."""

    values: torch.Tensor
    window: LatentWindow

    @property
    def rows(self) -> torch.Tensor:
        """The values as one (B * rows * cols, D) table, the rows ``LatentWindow.rows_of`` indexes."""
        return self.values.reshape(-1, self.values.shape[-1])


def table_latents(values: torch.Tensor, grid_shape: tuple[int, int], origin: tuple[int, int],
                  trim: int) -> TableLatents:
    """Per-latent values (B, D, rows, cols) of a window at ``origin`` of ``grid_shape`` as a table, less the
    outermost ``trim`` latents on every side that does not touch the grid's border (a convolution over the window
    computed those without the neighbours beyond)."""
    rows, cols = values.shape[-2:]
    top, left = origin
    trim_top, trim_left = trim * (top > 0), trim * (left > 0)
    trim_bottom, trim_right = trim * (top + rows < grid_shape[0]), trim * (left + cols < grid_shape[1])
    values = values[:, :, trim_top:rows - trim_bottom, trim_left:cols - trim_right]
    window = LatentWindow(tuple(grid_shape), (top + trim_top, left + trim_left), tuple(values.shape[2:]))
    return TableLatents(values.flatten(2).transpose(1, 2).contiguous(), window)


def as_floats(values: torch.Tensor, what: str, dtype: torch.dtype) -> torch.Tensor:
    """``values`` in ``dtype``, the weights' float type (float64 ones would meet float32 weights deep in torch, as a
    dtype error); a ValueError naming ``what`` unless they are floats."""
    if not values.is_floating_point():
        raise ValueError(f"{what} must hold floats, got {values.dtype}")
    return values.to(dtype)


def check_query_layout(coord: torch.Tensor, cell: torch.Tensor | None) -> None:
    """A clear ValueError unless coord is a (B, Q, 2) tensor and cell, when given, a tensor."""
    for name, values in (("coord", coord), ("cell", cell)):
        if values is not None and not isinstance(values, torch.Tensor):
            raise ValueError(f"{name} must be a (B, Q, 2) tensor, got a {type(values).__name__}")
    if coord.dim() != 3 or coord.shape[-1] != 2:
        raise ValueError(f"coord must be a (B, Q, 2) tensor, got shape {tuple(coord.shape)}")


def checked_queries(coord: torch.Tensor, cell: torch.Tensor | None, needs_cell: bool, dtype: torch.dtype,
                    batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """coord and cell (when used) as ``dtype``; a clear ValueError unless they are (B, Q, 2) float tensors, B the
    ``batch`` of pictures the latents hold (others would index past their table)."""
    check_query_layout(coord, cell)
    if coord.shape[0] != batch:
        raise ValueError(f"coord holds queries of {coord.shape[0]} pictures, the latents are of {batch}")
    if not needs_cell:
        return as_floats(coord, "coord", dtype), cell
    if cell is None:
        raise ValueError("this model decodes cells: pass cell, a (B, Q, 2) tensor")
    if cell.shape != coord.shape:
        raise ValueError(f"cell must have the shape of coord {tuple(coord.shape)}, got {tuple(cell.shape)}")
    return as_floats(coord, "coord", dtype), as_floats(cell, "cell", dtype)


def padded_chunk(queries: torch.Tensor, start: int, count: int, size: int) -> torch.Tensor:
    """``count`` queries (B, Q, 2) from ``start``, then copies of the last one up to ``size``, as a new tensor."""
    chunk = queries[:, start:start + count]
    if size > count:
        return torch.cat([chunk, chunk[:, -1:].expand(-1, size - count, -1)], dim=1)
    return chunk.clone(memory_format=torch.contiguous_format)  # a view's offset would be one more guard


def renderable(model: object) -> ImplicitModel:
    """``model`` if the renderer can run it: an ImplicitModel with float32 weights (``precision`` picks the maths);
    else a LiifError saying what it is."""
    if not isinstance(model, ImplicitModel):
        raise LiifError(f"model must be an image model (an ImplicitModel, as liif.load_model gives), "
                        f"got {type(model).__name__}")
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes - {torch.float32}:
        raise LiifError(f"the model's weights are {', '.join(sorted(map(str, dtypes)))}; it renders with float32 "
                        "weights (load it again, or model.float()), and precision='bf16' or 'fp16' picks the maths")
    return model


class ImplicitModel(nn.Module):
    """An encoder's latent grid decoded at any coordinate; ``forward(inp, coord, cell)`` has the reference signature.

    Subclasses set ``encoder`` and define ``latents`` and ``query``, plus the two reaches the renderer needs to
    cut the work into exact tiles: ``feature_halo`` (features beyond a latent that its own latent reads) and
    ``latent_reach`` (latents beyond the one under a query that the query reads; ``reach`` where it grows with the
    cell).
    """

    encoder: nn.Module
    feature_halo: int = 0
    latent_reach: int = 0
    # The scale its authors clip the cell at when testing (LTE: 4), or None; ``liif eval`` applies it by default.
    test_cell_clip: float | None = None
    # Whether the encoder's weights and inputs are channels-last (``use_channels_last``).
    channels_last: bool = False
    # ``query`` compiled by ``compile_queries``, which ``query_chunked`` then calls, or None.
    compiled_query: Any = None

    def __init__(self) -> None:
        super().__init__()
        self.data_norm = DataNorm()
        # Test-time cell clipping: cells smaller than those of this scale are decoded as this scale's cells.
        self.cell_clip: float | None = None

    def clip_cell(self, cell: torch.Tensor, grid_shape: tuple[int, int]) -> torch.Tensor:
        """``cell`` as the decoder sees it: with ``cell_clip`` set, the cell times max(scale / cell_clip, 1) per
        axis (LTE's test.py), where the scale is latents per output pixel over the cell."""
        if self.cell_clip is None:
            return cell
        floor = torch.tensor([2 / (grid_shape[0] * self.cell_clip), 2 / (grid_shape[1] * self.cell_clip)],
                             dtype=cell.dtype, device=cell.device)
        return torch.maximum(cell, floor)

    @property
    def weight_dtype(self) -> torch.dtype:
        """The float type of the weights, which inputs, coordinates and cells are cast to."""
        return next(self.parameters()).dtype

    @property
    def receptive_radius(self) -> int:
        """How many input pixels beyond a latent's own can change what its decoder reads."""
        return self.encoder.receptive_radius + self.feature_halo

    @property
    def windowed(self) -> bool:
        """Whether ``latents`` can cover a window of the grid (else the renderer encodes whole images)."""
        return True

    def use_channels_last(self) -> ImplicitModel:
        """Store the encoder's convolutions channels-last and feed it channels-last inputs: the layout tensor
        cores convolve fastest (5x with bf16 at 1080p on an H200); the features are the same."""
        self.encoder.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self

    def run_encoder(self, inp: torch.Tensor) -> torch.Tensor:
        """The encoder's output for ``inp``, given in the encoder's memory layout."""
        if self.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        return self.encoder(inp)

    def checked_input(self, inp: torch.Tensor) -> torch.Tensor:
        """``inp`` in the weights' float type; a clear ValueError unless it is a (B, C, h, w) float tensor (an
        array, one picture alone or 8-bit values would fail deep in torch, or give features of no batch)."""
        if not isinstance(inp, torch.Tensor):
            raise ValueError(f"inp must be a (B, 3, h, w) tensor, got a {type(inp).__name__}")
        if inp.dim() != 4:
            alone = " (one picture: inp[None])" if inp.dim() == 3 else ""
            raise ValueError(f"inp must be a (B, 3, h, w) tensor, got shape {tuple(inp.shape)}{alone}")
        return as_floats(inp, "inp", self.weight_dtype)

    def encode(self, inp: torch.Tensor) -> torch.Tensor:
        """The latent feature grid (B, C, h, w) of an input (B, 3, h, w) in the model's space (any float type: cast
        to the weights')."""
        return self.run_encoder(self.checked_input(inp))

    def latents(self, feat: torch.Tensor, grid_shape: tuple[int, int] | None = None,
                origin: tuple[int, int] = (0, 0)) -> Any:
        """What ``query`` needs from a feature grid, or from a window of it at ``origin`` of ``grid_shape``."""
        raise NotImplementedError

    def query(self, latents: Any, coord: torch.Tensor, cell: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs (B, Q, C) at coordinates (B, Q, 2) with cells (B, Q, 2), in the model's space."""
        raise NotImplementedError

    def reach(self, cell: tuple[float, float], grid_shape: tuple[int, int]) -> int:
        """Latents beyond the one under a query that queries with this ``cell`` (row, col) read on a latent grid of
        ``grid_shape``: ``latent_reach``, unless a subclass's reach grows with the cell."""
        return self.latent_reach

    def compile_queries(self, mode: str = "default") -> ImplicitModel:
        """Make ``query_chunked`` call ``query`` compiled by torch.compile in ``mode`` (``default``, or
        ``reduce-overhead``: replayed as CUDA graphs on a GPU), or eagerly again (``none``). Shapes are dynamic,
        so windows of any size share one compiled graph."""
        if mode not in COMPILE_MODES:
            raise LiifError(f"unknown compile mode {mode!r}; use {', '.join(COMPILE_MODES)}")
        self.compiled_query = None if mode == "none" else \
            torch.compile(self.query, mode=None if mode == "default" else mode, dynamic=True)
        return self

    def query_chunked(self, latents: Any, coord: torch.Tensor, cell: torch.Tensor | None = None,
                      chunk_size: int | None = None) -> torch.Tensor:
        """``query`` over contiguous chunks of at most ``chunk_size`` queries per picture (default: the device's, for
        the batch), to bound memory."""
        check_query_layout(coord, cell)  # before chunks are cut along its second dimension
        if chunk_size is None:
            chunk_size = query_chunk(coord.device, coord.shape[0])
        COUNT.check(chunk_size, "chunk_size", LiifError)
        if self.compiled_query is not None:
            return self.compiled_chunks(latents, coord, cell, chunk_size)
        if coord.shape[1] <= chunk_size:
            return self.query(latents, coord, cell)
        return torch.cat([self.query(latents, coord[:, start:start + chunk_size],
                                     None if cell is None else cell[:, start:start + chunk_size])
                          for start in range(0, coord.shape[1], chunk_size)], dim=1)

    def compiled_chunks(self, latents: Any, coord: torch.Tensor, cell: torch.Tensor | None,
                        chunk_size: int) -> torch.Tensor:
        """``query_chunked`` through ``compiled_query``: each chunk is a fresh tensor, and a short last chunk is
        padded with copies of its last query to a power of two, so a few shapes serve every call (one CUDA
        graph each); outputs are copied out, as the next replay of a graph overwrites them."""
        outs = []
        for start in range(0, coord.shape[1], chunk_size):
            count = min(chunk_size, coord.shape[1] - start)
            size = min(chunk_size, 1 << (count - 1).bit_length())
            torch.compiler.cudagraph_mark_step_begin()
            pred = self.compiled_query(latents, padded_chunk(coord, start, count, size),
                                       None if cell is None else padded_chunk(cell, start, count, size))
            outs.append(pred[:, :count].clone())
        return torch.cat(outs, dim=1)

    def forward(self, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor | None = None) -> torch.Tensor:
        """One pass when training (gradients on); in chunks, with bounded memory, in inference."""
        latents = self.latents(self.encode(inp))
        if torch.is_grad_enabled():
            return self.query(latents, coord, cell)
        return self.query_chunked(latents, coord, cell)


class TwoPathModel(ImplicitModel):
    """A decoder with two query paths computing one function: ``reference`` follows the reference code step by
    step on the whole feature map; ``fast`` (the default) gathers per-latent tables by integer index and works on
    windows of the grid. ``query_path`` picks one; subclasses define ``reference_query``, ``fast_latents`` and
    ``fast_query``."""

    query_path: str = "fast"

    @property
    def needs_cell(self) -> bool:
        return True

    @property
    def windowed(self) -> bool:
        return self.query_path == "fast"

    def latents(self, feat: torch.Tensor, grid_shape: tuple[int, int] | None = None,
                origin: tuple[int, int] = (0, 0)) -> FeatureLatents | TableLatents:
        if self.query_path not in QUERY_PATHS:
            raise ValueError(f"query_path must be one of {QUERY_PATHS}, not {self.query_path!r}")
        if self.query_path == "reference":
            if grid_shape not in (None, tuple(feat.shape[-2:])):
                raise ValueError("the reference query path works on whole feature grids only")
            return FeatureLatents(feat)
        return self.fast_latents(feat, tuple(grid_shape or feat.shape[-2:]), origin)

    def query(self, latents: FeatureLatents | TableLatents, coord: torch.Tensor,
              cell: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs (B, Q, C) at coordinates (B, Q, 2) with cells (B, Q, 2), in the model's space."""
        batch = (latents.feat if isinstance(latents, FeatureLatents) else latents.values).shape[0]
        coord, cell = checked_queries(coord, cell, self.needs_cell, self.weight_dtype, batch)
        if isinstance(latents, FeatureLatents):
            grid_shape = tuple(latents.feat.shape[-2:])
            cell = None if cell is None else self.clip_cell(cell, grid_shape)
            return self.reference_query(latents.feat, coord, cell)
        cell = None if cell is None else self.clip_cell(cell, latents.window.grid_shape)
        return self.fast_query(latents, coord, cell)

    def reference_query(self, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def fast_latents(self, feat: torch.Tensor, grid_shape: tuple[int, int], origin: tuple[int, int]) -> TableLatents:
        raise NotImplementedError

    def fast_query(self, latents: TableLatents, coord: torch.Tensor, cell: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError
