"""PSNR on Y (shave 4) of ``liif upscale --scale 4`` on Set5 and Set14, plain and with --self-ensemble.

Each HR picture is cropped and downscaled by 4 with PIL bicubic (8-bit) as `liif eval --degrade pil` does, upscaled x4
through the same steps the CLI runs (read, plan, render, quantise to 8 bits), and compared with the HR;
bicubic upscaling of the same LR is the baseline. Prints a Markdown table.

    python benchmarks/upscale_quality.py [--sets Set5 Set14] [--threads 2] [--no-ensemble]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from liif import load_model
from liif.errors import LiifError
from liif.evaluation.metrics import psnr
from common import BENCHMARK_SETS, run_script
from liif.imageio import Picture, read_picture
from liif.evaluation.datasets import read_rgb
from liif.evaluation.degrade import make_lr
from liif.resize import from_uint8, pil_bicubic, to_uint8
from liif.geometry import Geometry
from liif.upscale import render_picture

SCALE = 4


def hr_and_lr(path: Path) -> tuple[torch.Tensor, Picture]:
    """The HR (3, H, W) in [0, 1] cropped and its bicubic LR, as ``liif eval --degrade pil`` makes them; the LR
    as a Picture, gray where the file is (the CLI keeps gray pictures gray)."""
    hr, lr = make_lr(read_rgb(path), SCALE, "pil")
    planes = read_picture(path).color.shape[2]
    return hr, Picture(to_uint8(lr)[:, :, :planes])


def as_rgb(pixels: np.ndarray) -> np.ndarray:
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels


def upscaled(model, lr: Picture, self_ensemble: bool) -> torch.Tensor:
    target = Geometry(scale=SCALE).target(lr.pixels.shape[:2])
    return from_uint8(as_rgb(render_picture(model, lr, target, self_ensemble=self_ensemble).pixels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-ensemble", action="store_true", help="skip the (8x slower) self-ensemble runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pictures = {name: sorted((BENCHMARK_SETS / name).glob("*.png")) for name in args.sets}
    for name, paths in pictures.items():  # before any set runs: an empty row of nan would look like a result
        if not paths:
            raise LiifError(f"{BENCHMARK_SETS / name}: no .png pictures (--sets names folders there)")
    model = load_model("edsr-baseline-liif")
    print("| set | bicubic | liif upscale | --self-ensemble | gain | time plain / ensemble (s) |\n"
          "|---|---|---|---|---|---|", flush=True)
    for name, paths in pictures.items():
        scores = {"bicubic": [], "plain": [], "ensemble": []}
        seconds = {"plain": 0.0, "ensemble": 0.0}
        for path in paths:
            hr, lr = hr_and_lr(path)
            bicubic = pil_bicubic(from_uint8(as_rgb(lr.pixels)), hr.shape[1:])
            scores["bicubic"].append(psnr(bicubic, hr, SCALE, True))
            for mode, ensemble in (("plain", False), ("ensemble", True))[:1 if args.no_ensemble else 2]:
                started = time.perf_counter()
                scores[mode].append(psnr(upscaled(model, lr, ensemble), hr, SCALE, True))
                seconds[mode] += time.perf_counter() - started
        mean = {k: float(np.mean(v)) for k, v in scores.items() if v}
        ensemble = ("-", "-", "-") if args.no_ensemble else (f"{mean['ensemble']:.2f}",
                                                             f"{mean['ensemble'] - mean['plain']:+.3f}",
                                                             f"{seconds['ensemble']:.0f}")
        print(f"| {name} | {mean['bicubic']:.2f} | {mean['plain']:.2f} | {ensemble[0]} | {ensemble[1]} | "
              f"{seconds['plain']:.0f} / {ensemble[2]} |", flush=True)


if __name__ == "__main__":
    run_script(main)
