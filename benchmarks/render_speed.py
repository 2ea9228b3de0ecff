"""End-to-end render speed as users get it: ``liif.render`` (tiles, chunks, [0, 1] in and out) per precision.

Random input of --size, rendered at --scale with the built-in model, on --device; best of --repeats after a
warm-up, synchronised. Prints a markdown table (MP/s, frames/s, peak GPU memory).

    python benchmarks/render_speed.py --device cuda --size 1920x1080 --scale 2 --precisions fp32,bf16,fp16
"""

from __future__ import annotations

import argparse
import time

import torch

import liif
from liif.runtime import autocast, pick_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", default="1920x1080", help="input WxH")
    parser.add_argument("--scale", type=float, default=2)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--chunks", default="0", help="comma-separated query chunks to try (0: the device's default)")
    parser.add_argument("--tiles", default="256", help="comma-separated tile sides to try")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    width, height = (int(v) for v in args.size.lower().split("x"))
    out_size = (round(height * args.scale), round(width * args.scale))
    model = liif.load_model("edsr-baseline-liif", device)
    torch.manual_seed(0)
    image = torch.rand(1, 3, height, width, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# liif.render {width}x{height} -> {out_size[1]}x{out_size[0]}, {where}, torch {torch.__version__}")
    print("| precision | tile | chunk | seconds | output MP/s | frames/s | peak GPU MiB |")
    print("|---|---|---|---|---|---|---|")
    for precision in args.precisions.split(","):
        for tile in (int(t) for t in args.tiles.split(",")):
            for chunk in (int(c) or None for c in args.chunks.split(",")):
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                best = float("inf")
                with autocast(device, precision):
                    for i in range(args.repeats + 1):
                        sync()
                        start = time.perf_counter()
                        liif.render(model, image, out_size, chunk_size=chunk, tile=tile)
                        sync()
                        if i:  # the first run warms up kernels and the allocator
                            best = min(best, time.perf_counter() - start)
                peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
                mp = out_size[0] * out_size[1] / 1e6
                print(f"| {precision} | {tile} | {chunk or 'default'} | {best:.3f} | {mp / best:.2f} | {1 / best:.2f} | "
                      f"{peak:.0f} |", flush=True)


if __name__ == "__main__":
    main()
