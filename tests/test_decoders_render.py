"""Every registered image decoder renders through the same renderer: tiled equals untiled (regions, downscales and
self-ensemble included), and ``liif upscale --model`` writes what the Python API renders whole."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import liif
from conftest import comic_crop
from facts import IMPLICIT, SMALL
from liif.normalization import DataNorm
from liif.renderer import render

WHOLE = 10_000  # a tile side larger than any test input: one tile, i.e. untiled
CASES = [((41, 57), ((-1, 1), (-1, 1)), False),            # x2.05: every tile boundary, borders
         ((37, 29), ((-0.45, 0.6), (-1.0, -0.1)), False),  # a region at anisotropic scales
         ((13, 19), ((-1, 1), (-1, 1)), False),            # a downscale (x0.65)
         ((27, 39), ((-1, 1), (-1, 1)), True)]             # self-ensemble


def comic_tensor() -> torch.Tensor:
    return torch.from_numpy(comic_crop()).permute(2, 0, 1)[None].float() / 255


def small(name: str):
    """The SMALL model of ``name`` with random weights, its output norm set so that its colours spread inside
    [0.1, 0.9] (the renderer's clamp would hide differences)."""
    torch.manual_seed(0)
    model = liif.make(SMALL[name]).eval()
    peak = render(model, comic_tensor(), (40, 56), tile=WHOLE)  # the default norm: x 0.5 + 0.5
    model.data_norm = DataNorm(gt_sub=(0.5,), gt_div=(0.2 / float((peak - 0.5).abs().max() * 2),))
    return model


@pytest.mark.parametrize("size,ranges,self_ensemble", CASES)
@pytest.mark.parametrize("name", IMPLICIT)
def test_tiled_equals_untiled(name, size, ranges, self_ensemble) -> None:
    model = small(name)
    image = comic_tensor()
    whole = render(model, image, size, ranges=ranges, tile=WHOLE, self_ensemble=self_ensemble)
    assert whole.std() > 0.01 and 0.05 < whole.min() and whole.max() < 0.95
    tiled = render(model, image, size, ranges=ranges, tile=6, self_ensemble=self_ensemble)  # 20 = 6+6+6+2 latents
    assert (tiled - whole).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", IMPLICIT)
def test_cli_upscale_writes_what_the_api_renders_untiled(tmp_path, name) -> None:
    model = small(name)
    liif.save_checkpoint(model, tmp_path / f"{name}.pth")
    Image.fromarray(comic_crop()).save(tmp_path / "comic.png")
    command = [sys.executable, "-m", "liif", "upscale", "comic.png", "--scale", "2", "--region", "2,1,26,19",
               "--self-ensemble", "--tile", "6", "--model", f"{name}.pth", "-o", "out.png", "--threads", "1", "--quiet"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    written = np.asarray(Image.open(tmp_path / "out.png"))
    expected = liif.upscale(comic_crop(), 2, region=(2, 1, 26, 19), model=liif.load_model(tmp_path / f"{name}.pth"),
                            device="cpu", self_ensemble=True, tile=WHOLE)
    assert written.shape == (36, 48, 3)
    assert np.array_equal(written, np.asarray(expected))


def test_an_output_beyond_memory_is_refused_in_one_line_before_any_tile() -> None:
    """A 2^24 x 2^24 render needs petabytes: a one-line error at once, where the first tile's coordinates alone
    failed in torch's allocator (or were filled until the system killed the process)."""
    model = liif.make(SMALL["liif"]).eval()
    side = 1 << 24
    with pytest.raises(liif.LiifError, match=rf"^the {side}x{side} output of 2 picture\(s\) needs 6291456.0 GiB of "
                                             r"memory, only [\d.]+ GiB is available$"):
        render(model, comic_tensor().expand(2, -1, -1, -1), (side, side))
