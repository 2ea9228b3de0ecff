"""Fast query path against the reference path for each decoder (LIIF, MetaSR, LTE), on the CPU.

Each decoder is the EDSR-baseline model of its reference training config (configs/train-div2k/edsr-baseline-
<decoder>.yaml) with seeded random weights. Two measurements per decoder and path, best of --repeats:
- render: encode + latents + every query of an input of --size at each of --scales (the reference path
  chunked like the reference's batched_predict, 30000 queries; the fast path by ``query_chunked``);
- train step: forward and backward of a batch of --batch 48x48 inputs with 2304 queries each (scales 1-4).
The outputs (and the losses) of the two paths are checked to agree before the times are printed.

    python benchmarks/decoder_speed.py [--threads 2] [--repeats 3]
    python benchmarks/decoder_speed.py --size 16 --scales 2 --batch 1 --repeats 1   # a smoke run
"""

from __future__ import annotations

import argparse
import platform

import torch

from common import ROOT, best_of, predict, run_script
import liif
from liif.commands.eval import parse_scales
from liif.geometry import make_cell, make_coord
from liif.training.config import load_config

CONFIGS = ROOT / "configs" / "train-div2k"
DECODERS = ("liif", "metasr", "lte")
PATHS = ("reference", "fast")


def build(decoder: str) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = load_config(CONFIGS / f"edsr-baseline-{decoder}.yaml")["model"]
    return liif.make(spec)


def render_seconds(model, size: int, scale: float, repeats: int) -> tuple[dict[str, float], float]:
    """Best seconds per path for one render, and the largest difference between the paths' outputs."""
    torch.manual_seed(1)
    inp = torch.rand(1, 3, size, size) * 2 - 1
    out_size = (round(size * scale),) * 2
    coord = make_coord(out_size).unsqueeze(0)
    cell = make_cell(coord, out_size)
    model.eval()
    with torch.no_grad():
        timings = best_of({path: lambda path=path: predict(on_path(model, path), inp, coord, cell) for path in PATHS},
                          repeats)
    difference = (timings["fast"].result - timings["reference"].result).abs().max()
    return {path: t.seconds for path, t in timings.items()}, float(difference)


def train_seconds(model, batch: int, repeats: int) -> tuple[dict[str, float], float]:
    """Best seconds per path for one forward + backward, and the difference between the paths' losses."""
    torch.manual_seed(2)
    inp = torch.rand(batch, 3, 48, 48) * 2 - 1
    scale = torch.empty(batch, 1, 1).uniform_(1, 4)
    coord = torch.rand(batch, 2304, 2) * 2 - 1
    cell = (2 / (48 * scale)).expand(batch, 2304, 2).contiguous()
    target = torch.rand(batch, 2304, 3) * 2 - 1
    model.train()

    def step(path: str) -> float:
        on_path(model, path).zero_grad(set_to_none=True)
        loss = (model(inp, coord, cell) - target).abs().mean()
        loss.backward()
        return loss.detach().item()

    timings = best_of({path: lambda path=path: step(path) for path in PATHS}, repeats)
    return {path: t.seconds for path, t in timings.items()}, abs(timings["fast"].result - timings["reference"].result)


def on_path(model: torch.nn.Module, path: str) -> torch.nn.Module:
    """The model set to query by ``path`` (the paths share one model, so alternating runs switch it)."""
    model.query_path = path
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=96, help="input side in pixels (default 96)")
    parser.add_argument("--scales", default="2,4,12", help="render scales (default 2,4,12)")
    parser.add_argument("--batch", type=int, default=4, help="training batch (default 4; the reference's is 16)")
    parser.add_argument("--decoders", default=",".join(DECODERS))
    args = parser.parse_args()
    scales = parse_scales(args.scales)
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
          f"best of {args.repeats}; EDSR-baseline encoders, random weights")
    print("| decoder | work | reference s | fast s | fast / reference speed | max difference |")
    print("|---|---|---|---|---|---|")
    for decoder in args.decoders.split(","):
        model = build(decoder)
        rows = [(f"{args.size}x{args.size} -> x{scale:g}", *render_seconds(model, args.size, scale, args.repeats))
                for scale in scales]
        rows.append((f"train step, batch {args.batch}", *train_seconds(model, args.batch, args.repeats)))
        for work, seconds, difference in rows:
            assert difference <= 1e-4, f"{decoder} {work}: the paths differ by {difference}"
            print(f"| {decoder} | {work} | {seconds['reference']:.3f} | {seconds['fast']:.3f} | "
                  f"**{seconds['reference'] / seconds['fast']:.2f}x** | {difference:.1e} |", flush=True)


if __name__ == "__main__":
    run_script(main)
