"""Load test of `liif serve`: tile requests from concurrent clients, every answer checked against
`liif.upscale` of the same region and size; prints requests per second and the server's peak RSS.

    python benchmarks/serve_load.py ../shared/data/benchmarks/Set14/baboon.png --requests 200 --clients 20

The server runs as its own process (`python -m liif serve`), so its peak RSS (VmHWM) is the server's alone.
tests/test_serve_load.py runs the same load (`run_load`) at a server inside the test process.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2
import numpy as np
from PIL import Image


def tile_requests(identifier: str, width: int, height: int, tile: int, scales: list[int]) -> list[tuple[str, tuple]]:
    """The viewer's tiles at each upscaled level: (path, (x0, y0, x1, y1, W, H)), as viewer.js asks for them."""
    requests = []
    for scale in scales:
        span = tile // scale
        for y in range(0, height, span):
            for x in range(0, width, span):
                w, h = min(span, width - x), min(span, height - y)
                requests.append((f"/iiif/3/{identifier}/{x},{y},{w},{h}/^{w * scale},{h * scale}/0/default.png",
                                 (x, y, x + w, y + h, w * scale, h * scale)))
    return requests


@dataclass
class LoadResult:
    seconds: float
    statuses: list[int]
    bodies: dict[str, bytes]  # one answer per distinct path (all answers to a path must be equal)
    inconsistent: int  # answers that differ from an earlier answer to the same path


async def run_load(base_url: str, paths: list[str], clients: int, timeout: float = 600) -> LoadResult:
    """GET every path of ``paths`` (in order, repeats allowed) from ``clients`` concurrent clients."""
    todo = list(enumerate(paths))
    statuses = [0] * len(paths)
    bodies: dict[str, bytes] = {}
    inconsistent = 0

    async def client() -> None:
        nonlocal inconsistent
        async with httpx2.AsyncClient(base_url=base_url, timeout=timeout) as http:
            while todo:
                index, path = todo.pop(0)
                answer = await http.get(path)
                statuses[index] = answer.status_code
                if answer.status_code == 200:
                    if bodies.setdefault(path, answer.content) != answer.content:
                        inconsistent += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return LoadResult(time.perf_counter() - started, statuses, bodies, inconsistent)


def load_paths(requests: list[tuple[str, tuple]], count: int, seed: int = 0) -> list[str]:
    """``count`` paths: every request once, then random repeats, shuffled (repeats hit the caches and in-flight
    sharing)."""
    rng = random.Random(seed)
    paths = [path for path, _ in requests]
    paths += [rng.choice(paths) for _ in range(max(0, count - len(paths)))]
    rng.shuffle(paths)
    return paths[:count]


def wrong_answers(picture_path: Path, requests: list[tuple[str, tuple]], bodies: dict[str, bytes], model) -> list[str]:
    """The paths whose answer differs from `liif.upscale` of the same region and size."""
    import liif

    wrong = []
    for path, (x0, y0, x1, y1, w, h) in requests:
        if path in bodies:
            expected = liif.upscale(picture_path, size=(w, h), region=(x0, y0, x1, y1), model=model).pixels
            if not np.array_equal(np.asarray(Image.open(io.BytesIO(bodies[path]))), expected):
                wrong.append(path)
    return wrong


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("picture")
    parser.add_argument("--model", default="edsr-baseline-liif")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--tile", type=int, default=256, help="output tile side (the viewer's is 256)")
    parser.add_argument("--scales", default="1,2,4,8", help="levels asked for, in output pixels per picture pixel")
    parser.add_argument("--crop", type=int, default=0, help="serve only the top-left CROPxCROP pixels (0: all)")
    args = parser.parse_args()

    import tempfile

    import liif
    from liif.commands.eval import parse_scales
    from liif.errors import LiifError
    from liif.imageio import Picture, read_picture

    levels = parse_scales(args.scales)
    if not all(level.is_integer() and level >= 1 for level in levels):
        raise LiifError(f"--scales {args.scales!r}: levels are whole numbers like 1,2,4,8")
    try:
        picture = read_picture(args.picture)
    except LiifError as error:
        raise LiifError(f"{args.picture}: {error}") from None
    folder = Path(tempfile.mkdtemp())
    if args.crop:
        picture = Picture(np.ascontiguousarray(picture.pixels[:args.crop, :args.crop]), picture.icc_profile)
    picture_path = folder / "load.png"
    picture.save(picture_path)
    height, width = picture.pixels.shape[:2]
    requests = tile_requests("load.png", width, height, args.tile, [int(level) for level in levels])
    paths = load_paths(requests, args.requests)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "liif", "serve", str(picture_path), "--port", str(port),
                               "--model", args.model, "--device", args.device])
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx2.get(f"{base}/iiif/3/load.png/info.json").status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        rss_idle = peak_rss_mb(server.pid)
        result = asyncio.run(run_load(base, paths, args.clients))
        rss_peak = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait()
    failed = sum(status != 200 for status in result.statuses)
    wrong = wrong_answers(picture_path, requests, result.bodies, liif.load_model(args.model, args.device))
    print(f"picture {width}x{height} ({args.picture}), model {args.model} on {args.device}, {os.cpu_count()} CPUs")
    print(f"{len(paths)} requests ({len(requests)} distinct tiles of {args.tile} px at x{args.scales}) from "
          f"{args.clients} clients: {result.seconds:.1f} s, {len(paths) / result.seconds:.1f} requests/s")
    print(f"answers: {len(paths) - failed} x 200, {failed} failed, {len(wrong)} wrong, {result.inconsistent} inconsistent")
    print(f"server RSS: {rss_idle:.0f} MB peak before the load, {rss_peak:.0f} MB peak after")
    if failed or wrong or result.inconsistent:
        raise SystemExit(1)


if __name__ == "__main__":
    from common import run_script

    run_script(main)
