"""Peak RSS and wall time of ``liif upscale --scale 4`` on square inputs (default 1024 and 2000 pixels).

Each run is a fresh ``python -m liif upscale`` process, so its peak RSS (from wait4) covers everything:
torch, the model, reading, the output buffer, tiles and PNG writing. The input is Set14 baboon resized
to the size by PIL bicubic (the content does not change the work). Prints a Markdown table row per size.

``--malloc kept,glibc`` also runs each size with glibc's own malloc thresholds (the command pins them,
``liif.cli.keep_freed_buffers``; an empty GLIBC_TUNABLES in the environment makes it leave them alone), the two
alternating, best wall of --repeats each, with the CPU time and minor page faults of that run.

    python benchmarks/upscale_memory.py [--sizes 1024 2000] [--scale 4] [--threads 2] [--device cpu]
        [--model NAME_OR_PATH] [--malloc kept[,glibc]] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from common import BENCHMARK_SETS
SOURCE = BENCHMARK_SETS / "Set14" / "baboon.png"
# Environment changes per malloc mode: the command's pinned thresholds, or glibc's own.
MALLOC_MODES = {"kept": {}, "glibc": {"GLIBC_TUNABLES": ""}}


@dataclass
class Usage:
    """One upscale process: peak RSS in GiB, wall, user and system CPU seconds, minor page faults."""

    rss_gib: float
    wall: float
    user: float
    system: float
    minor_faults: int


def measure(source: Path, scale: float, threads: int, device: str, model: str, out: Path,
            malloc: str = "kept") -> Usage:
    """One ``liif upscale`` of ``source`` in a fresh process."""
    command = [sys.executable, "-m", "liif", "upscale", str(source), "--scale", str(scale),
               "-o", str(out), "--overwrite", "--quiet",
               "--threads", str(threads), "--device", device, "--model", model]
    started = time.perf_counter()
    process = subprocess.Popen(command, env={**os.environ, **MALLOC_MODES[malloc]})
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"upscale of {source.name} failed")
    # ru_maxrss is in KiB on Linux
    return Usage(usage.ru_maxrss / 2**20, wall, usage.ru_utime, usage.ru_stime, usage.ru_minflt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2000])
    parser.add_argument("--scale", type=float, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="edsr-baseline-liif")
    parser.add_argument("--malloc", default="kept", help="comma-separated: kept (the command's), glibc")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    modes = args.malloc.split(",")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, device {args.device}, "
          f"{args.threads} threads, model {args.model}, best wall of {args.repeats}", flush=True)
    print("| input | output | malloc | peak RSS (GiB) | wall (s) | user s | system s | minor faults | output MP/s |\n"
          "|---|---|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            source = Path(tmp) / f"in_{size}.png"
            Image.open(SOURCE).convert("RGB").resize((size, size), Image.BICUBIC).save(source)
            best: dict[str, Usage] = {}
            for _ in range(args.repeats):
                for mode in modes:  # alternating: only alternation compares them on a shared VM
                    usage = measure(source, args.scale, args.threads, args.device, args.model,
                                    Path(tmp) / f"out_{size}.png", mode)
                    if mode not in best or usage.wall < best[mode].wall:
                        best[mode] = usage
            out = round(size * args.scale)
            for mode, u in best.items():
                print(f"| {size}x{size} | {out}x{out} | {mode} | {u.rss_gib:.2f} | {u.wall:.1f} | {u.user:.1f} | "
                      f"{u.system:.1f} | {u.minor_faults} | {out * out / u.wall / 1e6:.3f} |", flush=True)


if __name__ == "__main__":
    main()
