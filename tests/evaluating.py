"""Helpers for the `liif eval` tests: small real crops of Set5, a benchmark-layout set made from them, and the
command run in this process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import BENCHMARKS, shared_file
from liif.cli import main
from liif.evaluation.degrade import matlab_imresize

NAMES = ("baby", "bird", "head")


def set5_crop(name: str, size: tuple[int, int] = (52, 44)) -> np.ndarray:
    """A (h, w, 3) uint8 crop from a Set5 image, away from its borders."""
    img = np.array(Image.open(shared_file(BENCHMARKS / "Set5" / f"{name}.png")).convert("RGB"))
    return img[60:60 + size[0], 70:70 + size[1]]


def make_benchmark_set(root: Path, scales=(2,), lr_names=None) -> Path:
    """An EDSR-layout set <root>/HR, <root>/LR_bicubic/X{s}/<name>x{s}.png made with MATLAB-style bicubic."""
    (root / "HR").mkdir(parents=True)
    for name in NAMES:
        hr = set5_crop(name)
        Image.fromarray(hr).save(root / "HR" / f"{name}.png")
        for s in scales:
            folder = root / "LR_bicubic" / f"X{s}"
            folder.mkdir(parents=True, exist_ok=True)
            lr = matlab_imresize(hr, (hr.shape[0] // s, hr.shape[1] // s), 1 / s)
            Image.fromarray(lr).save(folder / f"{(lr_names or {}).get(name, name)}x{s}.png")
    return root


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """``liif eval --quiet`` in this process: its exit code, stdout and stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--quiet", *args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def expect_error(capsys, mentions: str, *args: str) -> str:
    """Run ``liif eval`` and check that it fails with one line (exit 2) mentioning ``mentions``; the line."""
    code, _, err = run_cli(capsys, *args)
    assert code == 2, err
    assert err.startswith("liif eval: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert mentions in err, err
    return err
