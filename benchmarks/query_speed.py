"""Fast query path against the reference path: seconds, output MP/s and peak RSS, in one run.

Each (case, path) renders in a fresh child process, so peak RSS belongs to that render alone.
The time covers encode + latents + every chunked query (the whole render), best of --repeats.

    python benchmarks/query_speed.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time

import torch

CASES = [((128, 128), 4), ((64, 64), 12)]
# The reference's batched_predict uses bsize 30000; the fast path its own default chunk.
CHUNKS = {"reference": 30000, "fast": None}


def render_once(path: str, size: tuple[int, int], scale: int, threads: int, repeats: int, queue) -> None:
    import liif
    from liif.geometry import make_cell, make_coord

    torch.set_num_threads(threads)
    model = liif.load_model("edsr-baseline-liif")
    model.query_path = path
    torch.manual_seed(0)
    inp = torch.rand(1, 3, *size) * 2 - 1
    out_size = (size[0] * scale, size[1] * scale)
    coord = make_coord(out_size).unsqueeze(0)
    cell = make_cell(coord, out_size)
    chunk = {} if CHUNKS[path] is None else {"chunk_size": CHUNKS[path]}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            latents = model.latents(model.encode(inp))
            pred = model.query_chunked(latents, coord, cell, **chunk)
            best = min(best, time.perf_counter() - start)
            del latents
    checksum = float(pred.double().sum())
    queue.put({"path": path, "seconds": best, "mp_per_s": out_size[0] * out_size[1] / best / 1e6,
               "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "rss_after_load_mib": rss_before, "checksum": checksum})


def measure(path: str, size, scale: int, threads: int, repeats: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=render_once, args=(path, size, scale, threads, repeats, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
          f"best of {args.repeats}")
    print("| case | path | seconds | output MP/s | peak RSS (MiB) | RSS after load (MiB) |")
    print("|---|---|---|---|---|---|")
    results = []
    for size, scale in CASES:
        row = {}
        for path in ("reference", "fast"):
            row[path] = measure(path, size, scale, args.threads, args.repeats)
            r = row[path]
            print(f"| {size[0]}x{size[1]} -> x{scale} | {path} | {r['seconds']:.2f} | {r['mp_per_s']:.4f} | "
                  f"{r['peak_rss_mib']:.0f} | {r['rss_after_load_mib']:.0f} |", flush=True)
        agree = abs(row["fast"]["checksum"] - row["reference"]["checksum"]) / abs(row["reference"]["checksum"])
        ratio = row["fast"]["mp_per_s"] / row["reference"]["mp_per_s"]
        print(f"| {size[0]}x{size[1]} -> x{scale} | **speed-up** | **{ratio:.2f}x** | | "
              f"checksums agree to {agree:.1e} | |", flush=True)
        results.append({"size": size, "scale": scale, "ratio": ratio, **row})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
