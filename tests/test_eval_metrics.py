"""PSNR and SSIM against values worked out independently here: closed forms and a direct windowed SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facts import EDSR_Y
from liif.evaluation.metrics import psnr, shave_for, ssim_y


def random_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A (3, h, w) image of 8-bit values in [0, 1]."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (3, h, w)) / 255.0).float()


def test_shave_rules_follow_edsr():
    assert [shave_for("benchmark", s) for s in (2, 3, 4, 8)] == [2, 3, 4, 8]
    assert [shave_for("div2k", s) for s in (2, 4, 30)] == [8, 10, 36]
    assert shave_for("benchmark", 2.5) == 3


def test_psnr_y_weighs_a_red_offset_by_the_edsr_coefficient():
    hr = random_image(20, 24)
    sr = hr.clone()
    d = 4 / 255
    sr[0] += d  # only red changes: the Y difference is 65.738/256 * d at every pixel
    expected = -10 * math.log10((EDSR_Y[0] * d) ** 2)
    assert psnr(sr, hr, border=2, on_y=True) == pytest.approx(expected, abs=1e-5)
    # on RGB a third of the values differ by d
    assert psnr(sr, hr, border=2, on_y=False) == pytest.approx(-10 * math.log10(d * d / 3), abs=1e-5)


def test_psnr_ignores_exactly_the_shaved_border():
    hr = random_image(16, 20)
    sr = hr.clone()
    s, d = 3, 10 / 255
    sr[:, :, s - 1] += d  # column just outside the kept region at shave s, inside it at shave s - 1
    assert psnr(sr, hr, border=s, on_y=True) == math.inf
    kept_rows, kept_cols = 16 - 2 * (s - 1), 20 - 2 * (s - 1)
    y_diff = EDSR_Y.sum() * d
    mse = kept_rows * y_diff**2 / (kept_rows * kept_cols)  # one changed column of the kept region
    assert psnr(sr, hr, border=s - 1, on_y=True) == pytest.approx(-10 * math.log10(mse), abs=1e-5)


def test_psnr_is_computed_in_float64():
    """A large image with small differences: float32 squares and means round to ~1e-7 dB, float64 does not."""
    hr = random_image(300, 300, seed=3)
    sr = hr + torch.from_numpy(np.random.default_rng(4).normal(0, 1e-3, hr.shape)).float()
    diff = sr.numpy().astype(np.float64) - hr.numpy().astype(np.float64)
    tolerance = 1e-9
    for on_y, channels in ((False, diff), (True, np.tensordot(EDSR_Y, diff, axes=1))):
        expected = -10 * math.log10(np.mean(channels**2))
        weights = torch.tensor(EDSR_Y, dtype=torch.float32)
        in_float32 = torch.einsum("chw,c->hw", sr - hr, weights) if on_y else sr - hr
        float32_psnr = -10 * math.log10(in_float32.pow(2).mean().item())
        assert abs(float32_psnr - expected) > 10 * tolerance, (on_y, float32_psnr - expected)  # the test can fail
        assert psnr(sr, hr, border=0, on_y=on_y) == pytest.approx(expected, abs=tolerance)


def test_ssim_of_identical_images_is_one():
    img = random_image(32, 32)
    assert ssim_y(img, img, border=4) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_two_flat_images_has_its_closed_form():
    a, b = 100 / 255, 140 / 255
    sr, hr = torch.full((3, 24, 24), a), torch.full((3, 24, 24), b)
    ya, yb = (16 + 255 * v * EDSR_Y.sum() for v in (float(np.float32(a)), float(np.float32(b))))
    c1 = (0.01 * 255) ** 2
    # no variance: SSIM reduces to the luminance term
    assert ssim_y(sr, hr, border=2) == pytest.approx((2 * ya * yb + c1) / (ya**2 + yb**2 + c1), abs=1e-9)


def direct_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM by its definition: Gaussian-weighted statistics of every full 11x11 window, then the mean."""
    t = np.arange(11) - 5
    g = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.5**2))
    g /= g.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            wx, wy = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
            mx, my = (g * wx).sum(), (g * wy).sum()
            vx, vy = (g * (wx - mx) ** 2).sum(), (g * (wy - my) ** 2).sum()
            cov = (g * (wx - mx) * (wy - my)).sum()
            values.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_matches_a_direct_windowed_computation_on_y():
    hr = random_image(26, 29, seed=1)
    sr = (hr + 0.3 * torch.from_numpy(np.random.default_rng(2).standard_normal(hr.shape)).float()).clamp(0, 1)
    border = 3

    def y_channel(img: torch.Tensor) -> np.ndarray:
        rgb = img.double().numpy()[:, border:-border, border:-border]
        return 16 + 255 * np.tensordot(EDSR_Y, rgb, axes=1)

    expected = direct_ssim(y_channel(sr), y_channel(hr))
    assert 0.2 < expected < 0.95  # a real, non-trivial case
    assert ssim_y(sr, hr, border) == pytest.approx(expected, abs=1e-10)


def test_metrics_refuse_an_image_smaller_than_the_shave():
    img = random_image(8, 8)
    with pytest.raises(ValueError, match="too small"):
        psnr(img, img, border=4, on_y=True)
