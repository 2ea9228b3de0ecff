"""Peak RSS and wall time of ``liif upscale --scale 4`` on square inputs (default 1024 and 2000 pixels).

Each run is a fresh ``python -m liif upscale`` process, so its peak RSS (from wait4) covers everything:
torch, the model, reading, the output buffer, tiles and PNG writing. The input is Set14 baboon resized
to the size by PIL bicubic (the content does not change the work). Prints a Markdown table row per size.

    python benchmarks/upscale_memory.py [--sizes 1024 2000] [--threads 2] [--device cpu] [--model NAME_OR_PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from common import BENCHMARK_SETS
SOURCE = BENCHMARK_SETS / "Set14" / "baboon.png"


def measure(size: int, scale: float, threads: int, device: str, model: str, workdir: Path) -> tuple[float, float]:
    """(peak RSS in GiB, wall seconds) of one upscale of a ``size`` x ``size`` picture."""
    source = workdir / f"in_{size}.png"
    Image.open(SOURCE).convert("RGB").resize((size, size), Image.BICUBIC).save(source)
    command = [sys.executable, "-m", "liif", "upscale", str(source), "--scale", str(scale),
               "-o", str(workdir / f"out_{size}.png"), "--overwrite", "--quiet",
               "--threads", str(threads), "--device", device, "--model", model]
    started = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"upscale of {size}x{size} failed")
    return usage.ru_maxrss / 2**20, wall  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2000])
    parser.add_argument("--scale", type=float, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="edsr-baseline-liif")
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, device {args.device}, "
          f"{args.threads} threads, model {args.model}", flush=True)
    print("| input | output | peak RSS (GiB) | wall (s) | output MP/s |\n|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            rss, wall = measure(size, args.scale, args.threads, args.device, args.model, Path(tmp))
            out = round(size * args.scale)
            print(f"| {size}x{size} | {out}x{out} | {rss:.2f} | {wall:.0f} | {out * out / wall / 1e6:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
