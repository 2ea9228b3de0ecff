"""Real pictures: ``liif upscale --scale 4`` on Set14 beats bicubic by at least 1.5 dB PSNR on Y."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from liif.evaluation.metrics import psnr
from liif.resize import from_uint8, pil_bicubic
from conftest import BENCHMARKS, shared_file

SCALE = 4


def rgb(path) -> torch.Tensor:
    return from_uint8(np.asarray(Image.open(path).convert("RGB")))


@pytest.fixture(scope="module")
def set14_runs(tmp_path_factory):
    """HR crops (multiple of 4), their PIL-bicubic LR, and the CLI's x4 outputs of the whole folder at once."""
    folder = shared_file(BENCHMARKS / "Set14")
    tmp = tmp_path_factory.mktemp("set14")
    (tmp / "lr").mkdir()
    names = sorted(p.name for p in folder.glob("*.png"))
    for name in names:
        hr = Image.open(folder / name)
        hr = hr.crop((0, 0, hr.width // SCALE * SCALE, hr.height // SCALE * SCALE))
        hr.save(tmp / name)
        hr.resize((hr.width // SCALE, hr.height // SCALE), Image.BICUBIC).save(tmp / "lr" / name)
    result = subprocess.run([sys.executable, "-m", "liif", "upscale", str(tmp / "lr"), "--scale", str(SCALE),
                             "-o", str(tmp / "sr"), "--threads", "2", "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return tmp, names


def test_set14_x4_beats_bicubic_by_1_5_db(set14_runs):
    tmp, names = set14_runs
    assert len(names) == 14
    gains = []
    for name in names:
        hr = rgb(tmp / name)
        sr = rgb(tmp / "sr" / name)
        assert sr.shape == hr.shape
        bicubic = pil_bicubic(rgb(tmp / "lr" / name), hr.shape[1:])
        gains.append(psnr(sr, hr, SCALE, True) - psnr(bicubic, hr, SCALE, True))
    assert np.mean(gains) >= 1.5, gains
    assert Image.open(tmp / "sr" / "bridge.png").mode == "L"  # the gray picture stays gray
