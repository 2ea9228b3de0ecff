"""Tiled rendering equals whole-image rendering; regions, self-ensemble and 8-bit output stay exact."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import liif
from liif import load_model, make
from liif.errors import LiifError
from liif.geometry import Geometry, Grid, make_cell, make_coord
from liif.imageio import Picture
from liif.normalization import DataNorm
from liif.renderer import ALL_SYMMETRIES, Source, render, render_tiles
from liif.upscale import render_picture
from conftest import REFERENCE, comic_crop, comic_patch, shared_file

# tiny-rdn-liif is left out: its receptive radius (123) exceeds the patch, so every tile encodes it whole.
TILED_FIXTURES = ["tiny-edsr-liif", "tiny-edsr-liif-no-unfold", "tiny-edsr-liif-no-ensemble", "tiny-edsr-liif-no-cell"]
WHOLE = 10_000  # a tile side larger than any test input: one tile, i.e. untiled


def tiny(name: str = "tiny-edsr-liif"):
    return load_model(shared_file(REFERENCE / f"{name}.pth"))


def unclamped(model):
    """``model`` with an output norm that maps its (random-weight) outputs well inside [0, 1], so that the
    renderer's clamp never acts and averages of renders equal renders of averages."""
    model.data_norm = DataNorm(gt_sub=(0.5,), gt_div=(0.02,))
    return model


CASES = [("tiny-edsr-liif", (74, 104), ((-1, 1), (-1, 1))), ("tiny-edsr-liif", (9, 11), ((-1, 1), (-1, 1)))] + [
    (name, (37, 29), ((-0.45, 0.6), (-1.0, -0.1))) for name in TILED_FIXTURES]


@pytest.mark.parametrize("name,size,ranges", CASES)
def test_tiled_equals_untiled(name, size, ranges):
    model = tiny(name)
    inp = comic_patch()
    whole = render(model, inp, size, ranges=ranges, tile=WHOLE)
    assert (render(model, inp, size, ranges=ranges, tile=10) - whole).abs().max().item() <= 1e-5


def test_whole_render_matches_reference_fixture():
    """The renderer's whole-image output is the reference's forward on the x3.7 grid."""
    model = unclamped(tiny())
    data = np.load(shared_file(REFERENCE / "tiny-edsr-liif.npz"))
    size = (round(3.7 * 20), round(3.7 * 28))
    expected = model.data_norm.to_pixels(torch.from_numpy(data["x3.7.pred"])).view(1, *size, 3).permute(0, 3, 1, 2)
    assert 0 < expected.min() and expected.max() < 1
    assert (render(model, comic_patch(), size, tile=5) - expected).abs().max().item() <= 1e-6


def test_upscaled_8_bit_pixels_are_the_reference_output_truncated():
    """``liif.upscale`` of the real comic crop at x3.7 (tiled) writes the reference's forward on the x3.7 grid, to
    colours, truncated to 8 bits as the reference demo's ToPILImage does (README), not rounded."""
    data = np.load(shared_file(REFERENCE / "tiny-edsr-liif.npz"))
    size = (round(3.7 * 20), round(3.7 * 28))
    levels = DataNorm().to_pixels(torch.from_numpy(data["x3.7.pred"])).double().view(*size, 3).numpy() * 255
    assert np.count_nonzero(np.floor(levels) != np.round(levels)) > levels.size / 4  # rounding would differ
    written = liif.upscale(comic_crop(), 3.7, model=tiny(), device="cpu", tile=5)
    assert written.shape == (*size, 3) and written.dtype == np.uint8
    # the model's float32 error (1e-6 of a colour) may cross a level only where the reference lies at one
    wrong = written != np.floor(levels)
    assert np.abs(levels[wrong] - np.round(levels[wrong])).max(initial=0) < 1e-3


def test_blocks_cover_the_grid_once():
    model = tiny()
    grid = Grid((50, 61))
    hits = torch.zeros(grid.size, dtype=torch.int32)
    for row, col, block in render_tiles(model, Source(comic_patch()), grid, tile=6):
        hits[row:row + block.shape[2], col:col + block.shape[3]] += 1
    assert bool((hits == 1).all())


def test_tiled_8bit_output_identical():
    model = tiny()
    pixels = (comic_patch()[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    picture = Picture(np.concatenate([pixels, pixels[:, :, :1]], axis=2))  # RGBA: alpha through the model too
    for target in (Geometry(scale=3.3).target((20, 28)), Geometry(scale=(2, 5), region=(3.5, 2, 20, 17.25)).target((20, 28))):
        whole = render_picture(model, picture, target, tile=WHOLE).pixels
        tiled = render_picture(model, picture, target, tile=6).pixels
        assert whole.shape == (*target.size, 4)
        assert np.array_equal(whole, tiled)


def test_region_is_a_window_of_the_whole_render():
    """Rendering a region at the whole render's pixel size gives exactly the whole render's pixels there."""
    model = tiny()
    inp = comic_patch()
    whole = render(model, inp, (60, 84))  # x3
    # rows 12..42 and columns 21..60 of the x3 grid = input pixels y 4..14, x 7..20
    part = render(model, inp, (30, 39), ranges=((2 * 4 / 20 - 1, 2 * 14 / 20 - 1), (2 * 7 / 28 - 1, 2 * 20 / 28 - 1)))
    assert (part - whole[:, :, 12:42, 21:60]).abs().max().item() <= 1e-5


def test_a_requested_region_is_that_window_of_the_whole_render():
    """``--region x0,y0,x1,y1`` in input pixels (x across, y down) at x3 is the window of the whole x3 render that
    those pixels cover, rows 3*y0..3*y1 and columns 3*x0..3*x1, on the 28x20 patch whose sides differ; a region may
    reach the picture's right and bottom edges."""
    model = tiny()
    inp = comic_patch()
    whole = render(model, inp, (60, 84))
    for region, size in (((7, 4, 20, 14), (30, 39)), ((14, 10, 28, 20), (30, 42))):
        target = Geometry(scale=3, region=region).target((20, 28))
        assert target.size == size
        grid = target.grid((20, 28))
        part = render(model, inp, grid.size, ranges=grid.ranges)
        window = whole[:, :, 3 * region[1]:3 * region[3], 3 * region[0]:3 * region[2]]
        assert window.std() > 0.05  # a window with detail: a misplaced one differs
        assert (part - window).abs().max().item() <= 1e-5


def test_self_ensemble_averages_the_eight_symmetries():
    """Each symmetry alone is the render of the transformed input, transformed back."""
    model = unclamped(tiny())
    inp = comic_patch()
    size = (47, 65)  # non-integer scales: no exact ties, where the reference's eps breaks the symmetry
    plain = render(model, inp, size, tile=WHOLE)
    renders = []
    for symmetry in ALL_SYMMETRIES:
        out_size = size[::-1] if symmetry.transpose else size
        transformed = render(model, symmetry.image(inp), out_size, tile=WHOLE)
        back = transformed.transpose(-2, -1) if symmetry.transpose else transformed
        dims = [d for d, flip in ((-2, symmetry.flip_y), (-1, symmetry.flip_x)) if flip]
        renders.append(back.flip(dims) if dims else back)
    expected = torch.stack(renders).mean(0)
    ensemble = render(model, inp, size, tile=10, self_ensemble=True)
    assert (ensemble - expected).abs().max().item() <= 1e-5
    assert (ensemble - plain).abs().max().item() > 2e-5  # it really averages different renders


def test_a_model_without_windowed_latents_renders_in_one_block():
    """The reference path cannot query windows: the renderer encodes the whole input once, and stays exact."""
    model = unclamped(tiny())
    model.query_path = "reference"
    data = np.load(shared_file(REFERENCE / "tiny-edsr-liif.npz"))
    size = (round(3.7 * 20), round(3.7 * 28))
    blocks = list(render_tiles(model, Source(comic_patch()), Grid(size), tile=3))
    assert len(blocks) == 1 and blocks[0][:2] == (0, 0)
    expected = model.data_norm.to_pixels(torch.from_numpy(data["x3.7.pred"])).view(1, *size, 3).permute(0, 3, 1, 2)
    assert (blocks[0][2] - expected).abs().max().item() <= 1e-6


def test_an_encoder_that_upsamples_is_refused_not_rendered_wrong():
    """Tiles and latent windows are cut in input pixels: an encoder whose grid is larger cannot be rendered."""
    torch.manual_seed(0)
    model = make({"name": "liif", "args": {"encoder_spec": {"name": "edsr-baseline", "args": {
        "n_resblocks": 1, "n_feats": 8, "scale": 2, "no_upsampling": False}}}}).eval()
    with pytest.raises(LiifError, match=r"keeps the input's size \(no_upsampling\), got \(16, 20\) from \(8, 10\)"):
        render(model, comic_patch()[:, :, :8, :10], (16, 20))


@pytest.mark.parametrize("image,size,message", [
    (lambda x: (x * 255).round().to(torch.uint8), (40, 56), r"floats in \[0, 1\], got torch.uint8"),
    (lambda x: x * 255, (40, 56), r"values in \[0, 1\], got 2 to 235"),
    (lambda x: x.permute(0, 2, 3, 1), (40, 56), r"got shape \(1, 20, 28, 3\) \(channels last"),
    (lambda x: x[0], (40, 56), r"\(B, 3, h, w\) tensor in \[0, 1\], got shape \(3, 20, 28\)"),
    (lambda x: x[:, :, :0], (40, 56), r"got shape \(1, 3, 0, 28\)"),
    (lambda x: x.numpy(), (40, 56), "got a ndarray"),
    (lambda x: torch.where(x > 0.5, float("nan"), x), (40, 56), r"values in \[0, 1\], got nan"),
    (lambda x: x, (0, 56), "size must be an int above 0"),
    (lambda x: x, 40, r"size must be two numbers \(height, width\), got 40"),
])
def test_render_refuses_pictures_and_sizes_it_would_render_wrong(image, size, message):
    """8-bit values, channels last or NaN once gave white or NaN pictures, or failed deep inside torch."""
    with pytest.raises(LiifError, match=message):
        render(tiny(), image(comic_patch()), size)


@pytest.mark.parametrize("shape", [(0,), (3, 0), (-2, 5), (2.5, 4), (4, True), (torch.tensor(2.5), 4), ("3", 4)])
def test_coordinates_and_cells_of_a_side_without_whole_pixels_are_clear_errors(shape):
    """make_coord and make_cell divided by the side: a ZeroDivisionError, or an error about a range's step sign;
    a side of 2.5 made 3 coordinates on a grid of 2.5-pixel cells."""
    message = "every side of a grid must be a whole number of pixels, at least 1, got shape " + re.escape(repr(shape))
    with pytest.raises(LiifError, match=message):
        make_coord(shape)
    with pytest.raises(LiifError, match=message):
        make_cell(torch.zeros(1, 4, 2), shape)
    assert make_coord((1, 2)).tolist() == [[0.0, -0.5], [0.0, 0.5]]
    assert make_coord(torch.Size([1, np.int64(2)])).tolist() == [[0.0, -0.5], [0.0, 0.5]]


def test_cells_of_coordinates_that_are_not_floats_are_refused():
    """A cell takes its coordinates' type: in an integer type every cell was 0, without a word."""
    with pytest.raises(LiifError, match=r"^coord must be a float tensor \(\.\.\., 2\), got torch.int64$"):
        make_cell(torch.zeros(1, 4, 2, dtype=torch.long), (2, 2))
    with pytest.raises(LiifError, match=r"^coord must be a float tensor \(\.\.\., 2\), got a ndarray$"):
        make_cell(np.zeros((1, 4, 2), np.float32), (2, 2))
    assert make_cell(make_coord((2, 4)).double(), (2, 4)).tolist() == [[1.0, 0.5]] * 8


def test_render_names_a_bad_model_region_or_chunk_and_takes_float64_pictures():
    model = tiny()
    for ranges in (((1, -1), (-1, 1)), ((float("nan"), 1), (-1, 1)), (-1, 1), ((-1, 1), (-1.5, 1)), ((0, 2), (-1, 1))):
        with pytest.raises(LiifError, match=r"ranges must be \(\(y0, y1\), \(x0, x1\)\)"):
            render(model, comic_patch(), (40, 56), ranges=ranges)
    with pytest.raises(LiifError, match="model must be an image model .* got str"):
        render("tiny-edsr-liif", comic_patch(), (40, 56))
    with pytest.raises(LiifError, match=r"weights are torch.float64; it renders with float32 weights"):
        render(tiny().double(), comic_patch(), (40, 56))
    for chunk in (-1, "64"):
        with pytest.raises(LiifError, match="chunk_size must be an int >= 1"):
            render(model, comic_patch(), (40, 56), chunk_size=chunk)
    assert torch.equal(render(model, comic_patch().double(), (40, 56)), render(model, comic_patch(), (40, 56)))
