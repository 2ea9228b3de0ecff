"""A render converts only the input windows it touches, and to the very bits of converting the whole picture."""

from __future__ import annotations

import importlib
import tracemalloc

import numpy as np
import pytest
import torch

from liif import load_model
from liif.geometry import Geometry
from liif.imageio import Picture, read_picture
from liif.normalization import DataNorm
from liif.renderer import Source, render, render_tiles
from liif.upscale import render_picture
from conftest import BENCHMARKS, TINY, shared_file

# Per-channel values whose division is not exact: another order or type of the conversion gives other bits.
NORM = DataNorm(inp_sub=(0.4488, 0.4371, 0.404), inp_div=(0.7, 0.3, 0.9))


@pytest.fixture(scope="module")
def model():
    net = load_model(shared_file(TINY))
    net.data_norm = NORM
    return net


def real(name: str) -> np.ndarray:
    return read_picture(shared_file(BENCHMARKS / name)).pixels


def kinds() -> dict[str, Picture]:
    """Real 60x70 pictures of each kind a Picture holds for the model: 8-bit RGB, gray, RGBA, 16-bit RGB."""
    rgb = real("Set5/butterfly.png")[100:160, 90:160]
    other = real("Set14/baboon.png")[200:260, 100:170]
    gray = other[:, :, 1:2]
    return {"rgb8": Picture(rgb), "gray": Picture(gray), "rgba": Picture(np.concatenate([rgb, gray], axis=2)),
            "rgb16": Picture(rgb.astype(np.uint16) * 256 + other)}  # low bytes from another picture: 16 real bits


class WholeConverted(Source):
    """Windows cut from an input converted whole beforehand: what rendering did before it converted windows."""

    def window(self, rows: tuple[int, int], cols: tuple[int, int], norm: DataNorm) -> torch.Tensor:
        return self.pixels[:, :, rows[0]:rows[1], cols[0]:cols[1]]


def whole_pixels(picture: Picture) -> torch.Tensor:
    """The picture in [0, 1] from first principles: colour then alpha, each float32 / max value, gray as RGB."""
    pixels = picture.pixels
    planes = [pixels[:, :, :3] if pixels.shape[2] >= 3 else pixels[:, :, :1]] + \
        ([pixels[:, :, -1:]] if pixels.shape[2] in (2, 4) else [])
    return torch.stack([torch.from_numpy(plane.astype(np.float32) / picture.max_value).permute(2, 0, 1)
                        .expand(3, -1, -1) for plane in planes])


@pytest.mark.parametrize("kind", ["rgb8", "gray", "rgba", "rgb16"])
def test_windows_converted_alone_render_the_bits_of_the_whole_picture_converted(model, kind, monkeypatch):
    picture = kinds()[kind]
    self_ensemble = kind == "rgb16"
    target = Geometry(scale=2.3, region=(21, 17.5, 52, 44)).target(picture.pixels.shape[:2])
    grid = target.grid(picture.pixels.shape[:2])
    pixels = whole_pixels(picture)
    expected = list(render_tiles(model, WholeConverted(NORM.to_model(pixels)), grid, tile=8,
                                 self_ensemble=self_ensemble))
    blocks = []

    def recorded(*args, **kwargs):
        for item in render_tiles(*args, **kwargs):
            blocks.append(item)
            yield item

    monkeypatch.setattr(importlib.import_module("liif.upscale"), "render_tiles", recorded)
    render_picture(model, picture, target, self_ensemble, tile=8)
    assert len(blocks) == len(expected) > 1
    for (row, col, block), (erow, ecol, eblock) in zip(blocks, expected):
        assert (row, col) == (erow, ecol) and torch.equal(block, eblock)
    # the public API on the same pictures in [0, 1]
    whole = torch.empty(pixels.shape[0], 3, *grid.size)
    for row, col, block in expected:
        whole[:, :, row:row + block.shape[2], col:col + block.shape[3]] = block
    assert torch.equal(render(model, pixels, grid.size, grid.ranges, tile=8, self_ensemble=self_ensemble), whole)


@pytest.mark.parametrize("entry", ["picture", "tensor"])
def test_a_small_region_of_a_large_picture_converts_only_its_windows(model, entry, monkeypatch):
    """A 40x32 render of a 3000x3000 picture once converted all 27 M values to floats twice (108 MB each) before
    its one tile: a server tile of a 90 MP picture spent 8.6 of its 15.7 s there."""
    side = 3000
    tile = real("Set5/butterfly.png")
    pixels = np.ascontiguousarray(np.tile(tile, (side // tile.shape[0] + 1, side // tile.shape[1] + 1, 1))[:side, :side])
    target = Geometry(scale=2, region=(1500, 1200, 1520, 1216)).target((side, side))
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255 if entry == "tensor" else None
    converted = []
    to_model = DataNorm.to_model
    monkeypatch.setattr(DataNorm, "to_model", lambda norm, values, channel_dim=1:
                        converted.append(values.numel()) or to_model(norm, values, channel_dim))
    tracemalloc.start()  # numpy's arrays are traced, torch's are not: the hook above counts those
    try:
        if entry == "picture":
            out = render_picture(model, Picture(pixels), target).pixels
        else:
            grid = target.grid((side, side))
            out = render(model, tensor, grid.size, grid.ranges)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape[:2] == (32, 40) or out.shape[2:] == (32, 40)
    values = 3 * side * side
    assert 0 < sum(converted) < values / 100
    assert peak < values * 4 / 20
