"""End-to-end render speed as users get it: ``liif.render`` (tiles, chunks, [0, 1] in and out) per precision.

Random input of --size, rendered at --scale with the built-in model, on --device; best of --repeats after a
warm-up (which includes compiling, timed apart), synchronised. Prints a markdown table (MP/s, frames/s, peak GPU
memory). --tiles auto is the device's tile (liif.runtime.render_tile); --compile none,default,reduce-overhead
compares eager queries with ``compile_queries`` (reduce-overhead: CUDA graphs).

    python benchmarks/render_speed.py --device cuda --size 1920x1080 --scale 2 --precisions fp32,bf16,fp16
    python benchmarks/render_speed.py --device cuda --precisions bf16 --tiles auto --compile none,default,reduce-overhead
"""

from __future__ import annotations

import argparse
from typing import Callable

import torch

from common import best_of, no_sync, run_script
import liif
from liif.runtime import autocast, check_precision, pick_device, render_tile
from liif.upscale import resolve_model


def measure(model, image: torch.Tensor, out_size: tuple[int, int], precision: str, tile: int | None,
            chunk: int | None, repeats: int, sync: Callable[[], object]) -> dict:
    """Seconds of the first render (warm-up, compiling) and the best of ``repeats`` more, with MP/s and frames/s."""
    with autocast(image.device, precision):
        timing = best_of({"render": lambda: liif.render(model, image, out_size, chunk_size=chunk, tile=tile)},
                         repeats, warmup=1, sync=sync)["render"]
    best = timing.seconds
    return {"first_s": timing.first_s, "seconds": best, "mp_per_s": out_size[0] * out_size[1] / 1e6 / best,
            "fps": 1 / best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", default="1920x1080", help="input WxH")
    parser.add_argument("--scale", type=float, default=2)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--chunks", default="0", help="comma-separated query chunks to try (0: the device's default)")
    parser.add_argument("--tiles", default="auto", help="comma-separated tile sides to try (auto: the device's)")
    parser.add_argument("--compile", default="none", help="comma-separated query compile modes: none, default, "
                        "reduce-overhead")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    precisions = args.precisions.split(",")
    for precision in precisions:  # before any case runs: one this device lacks would stop the table half-way
        check_precision(device, precision)
    width, height = (int(v) for v in args.size.lower().split("x"))
    out_size = (round(height * args.scale), round(width * args.scale))
    model = resolve_model("edsr-baseline-liif", device)  # as liif upscale runs it (channels-last)
    torch.manual_seed(0)
    image = torch.rand(1, 3, height, width, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else no_sync
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# liif.render {width}x{height} -> {out_size[1]}x{out_size[0]}, {where}, torch {torch.__version__}")
    print("| precision | tile | chunk | compile | first run s | seconds | output MP/s | frames/s | peak GPU MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in args.compile.split(","):
        model.compile_queries(mode)
        for precision in precisions:
            for tile in (None if t == "auto" else int(t) for t in args.tiles.split(",")):
                for chunk in (int(c) or None for c in args.chunks.split(",")):
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    stats = measure(model, image, out_size, precision, tile, chunk, args.repeats, sync)
                    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
                    shown_tile = tile or f"auto ({render_tile(device)})"
                    print(f"| {precision} | {shown_tile} | {chunk or 'default'} | {mode} | {stats['first_s']:.2f} | "
                          f"{stats['seconds']:.3f} | {stats['mp_per_s']:.2f} | {stats['fps']:.2f} | {peak:.0f} |",
                          flush=True)


if __name__ == "__main__":
    run_script(main)
