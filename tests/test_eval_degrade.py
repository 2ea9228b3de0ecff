"""The MATLAB imresize port (kernel, antialias width, mirrored borders, shapes, hand-derived outputs) and the
reference's test-time LR geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import BENCHMARKS, shared_file
from liif.evaluation.degrade import contributions, cubic, hr_crop_size, lr_size, make_lr, matlab_imresize

# Hand derivation of MATLAB imresize(row of 4, 1/2, 'bicubic') (scale 1/2, kernel width 4 / (1/2) = 8):
# output 1: u = 1/0.5 + 0.5 * (1 - 2) = 1.5, left = floor(1.5 - 4) = -3, P = ceil(8) + 2 = 10 taps j = -3..6,
# weight(j) = 0.5 * cubic(0.5 * (1.5 - j)): cubic at 2.25, 1.75, 1.25, .75, .25, .25, .75, 1.25, 1.75, 2.25
#   cubic(.25) = 1.5/64 - 2.5/16 + 1 = 111/128          cubic(.75) = 1.5*27/64 - 2.5*9/16 + 1 = 29/128
#   cubic(1.25) = -.5*125/64 + 2.5*25/16 - 5 + 2 = -9/128  cubic(1.75) = -.5*343/64 + 2.5*49/16 - 7 + 2 = -3/128
#   they sum to 2 * 128/128, so the normalised weights are cubic/2: -3, -9, 29, 111, 111, 29, -9, -3 (/256).
# Mirroring [1 2 3 4 4 3 2 1] maps j = -2..5 to pixels 3 2 1 1 2 3 4 4, so
#   out1 = (111 + 29) p1 + (111 - 9) p2 + (29 - 3) p3 + (-9 - 3) p4, all /256 = (70 p1 + 51 p2 + 13 p3 - 6 p4)/128
# and out2 is its mirror image: (-6 p1 + 13 p2 + 51 p3 + 70 p4)/128.
HALVING = np.array([[70, 51, 13, -6], [-6, 13, 51, 70]]) / 128
# (row, MATLAB's uint8 output): the values above rounded half away from zero and clipped to 0..255
HAND_TABLE = [
    ([0, 100, 200, 255], [48, 229]),   # 48.203125, 229.296875
    ([10, 10, 10, 10], [10, 10]),
    ([255, 0, 255, 0], [165, 90]),     # 165.3515625, 89.6484375
    ([0, 0, 0, 255], [0, 139]),        # -11.953125 clips to 0, 139.453125
    ([255, 255, 255, 0], [255, 116]),  # 266.953125 clips to 255, 115.546875
    ([1, 0, 0, 1], [1, 1]),            # exactly 0.5 each: MATLAB rounds halves away from zero
]


def test_cubic_kernel_is_keys_with_a_minus_half():
    x = np.array([0, 0.25, 0.5, 1, 1.5, 2, 2.5, -0.5, -1.5])
    assert cubic(x) == pytest.approx([1, 111 / 128, 0.5625, 0, -0.0625, 0, 0, 0.5625, -0.0625], abs=1e-12)
    t = np.random.default_rng(0).uniform(0, 1, 50)
    # interpolating: the integer shifts of the kernel sum to one everywhere
    assert sum(cubic(t - k) for k in range(-2, 3)) == pytest.approx(np.ones(50), abs=1e-12)


def test_downscaling_widens_the_kernel_by_one_over_scale():
    weights, indices = contributions(64, 16, 0.25)
    assert weights.shape == indices.shape == (16, 18)  # ceil(4 / 0.25) + 2 taps
    assert weights.sum(axis=1) == pytest.approx(np.ones(16), abs=1e-12)
    u = 8 / 0.25 + 0.5 * (1 - 4)  # centre of output 8 (1-based) in input coordinates
    left = np.floor(u - 8)
    raw = 0.25 * cubic(0.25 * (u - (left + np.arange(18))))
    assert weights[7] == pytest.approx(raw / raw.sum(), abs=1e-12)
    assert np.count_nonzero(np.abs(weights[7]) > 1e-12) == 16  # input pixels -7.5..7.5 away: support (-8, 8)
    # without antialiasing (or when enlarging) the kernel keeps its 4-pixel width
    plain, _ = contributions(64, 16, 0.25, antialias=False)
    assert plain.shape == (16, 6)
    up, _ = contributions(16, 32, 2.0)
    assert up.shape == (32, 6)


def test_borders_are_mirrored_as_matlab_does():
    weights, indices = contributions(4, 2, 0.5)
    # taps j = -3..6 (1-based) mirror to pixels 4 3 2 1 1 2 3 4 4 3, i.e. 0-based:
    assert indices[0].tolist() == [3, 2, 1, 0, 0, 1, 2, 3, 3, 2]
    assert weights[0] == pytest.approx(np.array([0, -3, -9, 29, 111, 111, 29, -9, -3, 0]) / 256, abs=1e-12)
    assert indices[1].tolist() == [1, 0, 0, 1, 2, 3, 3, 2, 1, 0]


@pytest.mark.parametrize("row, expected", HAND_TABLE)
def test_hand_derived_outputs(row, expected):
    out = matlab_imresize(np.array([row], dtype=np.uint8), (1, 2))
    assert out.dtype == np.uint8
    assert out[0].tolist() == expected


def test_two_dimensional_resize_rounds_after_each_axis_rows_first():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (4, 4)).astype(np.uint8)
    rows = np.floor(np.clip(HALVING @ img, 0, 255) + 0.5)  # equal scales: the row axis first, then 8 bits
    expected = np.floor(np.clip(rows @ HALVING.T, 0, 255) + 0.5)
    assert matlab_imresize(img, (2, 2)).tolist() == expected.astype(int).tolist()
    # a float image is resized without rounding
    floats = img.astype(np.float64)
    assert matlab_imresize(floats, (2, 2)) == pytest.approx(HALVING @ floats @ HALVING.T, abs=1e-9)


def test_integer_scales_give_exact_shapes():
    img = np.random.default_rng(4).integers(0, 256, (36, 48, 3)).astype(np.uint8)
    for s in (2, 3, 4, 6):
        out = matlab_imresize(img, (36 // s, 48 // s), scale=1 / s)
        assert out.shape == (36 // s, 48 // s, 3) and out.dtype == np.uint8
    flat = np.full((24, 30, 3), 77, dtype=np.uint8)
    assert (matlab_imresize(flat, (8, 10)) == 77).all()


def test_reference_geometry_crops_top_left_and_floors_the_lr_size():
    assert lr_size((13, 20), 3) == (4, 6) and hr_crop_size((4, 6), 3) == (12, 18)
    assert lr_size((12, 9), 3) == (4, 3)
    # floor(H/s + 1e-9): no loss to float error, where H/s falls just below a whole number (33 / 1.1 is
    # 29.999999999999996 in floats, 55 / 1.1 is 49.99999999999999)
    assert lr_size((33, 55), 1.1) == (30, 50)
    assert lr_size((11, 11), 2.5) == (4, 4) and hr_crop_size((4, 4), 2.5) == (10, 10)
    # the crop is Python's round(h_lr * s), as the reference's: 12.5 -> 12 and 7.5 -> 8 (halves to even)
    assert hr_crop_size((5, 3), 2.5) == (12, 8)
    hr = torch.rand(3, 13, 20)
    hr = torch.round(hr * 255) / 255
    for method in ("pil", "matlab"):
        crop, lr = make_lr(hr, 3, method)
        assert torch.equal(crop, hr[:, :12, :18]) and lr.shape == (3, 4, 6)
        assert torch.equal(torch.round(lr * 255) / 255, lr)  # 8-bit values


def test_at_integer_scales_the_geometry_is_floor_division_and_lr_times_s():
    # what the paired readers (benchmark LR files, sr-implicit-paired) crop to, by the same two functions
    for s in (2, 3, 4, 6, 8):
        for side in range(1, 2049):
            lr = lr_size((side, side + 1), s)
            assert lr == (side // s, (side + 1) // s)
            assert hr_crop_size(lr, s) == (lr[0] * s, lr[1] * s)
            assert hr_crop_size(lr, float(s)) == hr_crop_size(lr, s)


def test_matlab_and_pil_bicubic_agree_away_from_the_borders():
    path = shared_file(BENCHMARKS / "Set5" / "butterfly.png")
    hr = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255
    _, pil = make_lr(hr, 4, "pil")
    _, mat = make_lr(hr, 4, "matlab")
    # same kernel and centres; they differ only by each library's rounding (and PIL clips its borders)
    diff = ((pil - mat) * 255).round().abs()[:, 3:-3, 3:-3]
    assert diff.max() <= 2 and diff.mean() < 0.5
