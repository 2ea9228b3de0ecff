"""The released model on Set5 equals the reference implementation's published protocol numbers (PSNR-Y, shave =
scale, LR by PIL bicubic from the top-left-cropped HR, output not quantised), within 0.01 dB.
"""

from __future__ import annotations

import pytest

from conftest import BENCHMARKS, shared_file
from facts import BICUBIC_Y_PSNR, REFERENCE_Y_PSNR
from liif.evaluation import evaluate


@pytest.mark.parametrize("scale", sorted(REFERENCE_Y_PSNR))
def test_set5_matches_the_reference(scale):
    results = evaluate("edsr-baseline-liif", shared_file(BENCHMARKS / "Set5"), [scale], degrade="pil",
                       progress=False)
    assert len(results.scores) == 5
    means = results.means()["Set5"][f"x{scale}"]
    assert means["psnr"] == pytest.approx(REFERENCE_Y_PSNR[scale], abs=0.01)
    assert means["bicubic_psnr"] == pytest.approx(BICUBIC_Y_PSNR[scale], abs=0.005)
    assert means["bicubic_ssim"] < means["ssim"] < 1
