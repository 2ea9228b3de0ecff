"""Fast query path against the reference path, and ``forward``: seconds, output MP/s and peak RSS, in one run.

Each path renders in a fresh child process, so peak RSS belongs to that path alone. Modes: ``reference`` is
the reference path chunked like the reference's ``batched_predict`` (30000 queries); ``fast`` is
``query_chunked`` on the fast path and ``forward`` is ``model(inp, coord, cell)`` with gradients off, which
do the same work, so they alternate in one process (one peak RSS) to share its noise. The time covers
encode + latents + every query (the whole render), best of --repeats.

    python benchmarks/query_speed.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
from queue import Empty

import torch

from common import best_of, predict, run_script
from liif.fileio import write_text

CASES = [((96, 96), 4), ((128, 128), 4), ((64, 64), 12)]
MODES = ("reference", "fast", "forward")
PROCESSES = (("reference",), ("fast", "forward"))


def render_once(modes: tuple[str, ...], size: tuple[int, int], scale: int, threads: int, repeats: int,
                queue) -> None:
    import liif
    from liif.geometry import make_cell, make_coord

    torch.set_num_threads(threads)
    model = liif.load_model("edsr-baseline-liif")
    model.query_path = "reference" if "reference" in modes else "fast"
    torch.manual_seed(0)
    inp = torch.rand(1, 3, *size) * 2 - 1
    out_size = (size[0] * scale, size[1] * scale)
    coord = make_coord(out_size).unsqueeze(0)
    cell = make_cell(coord, out_size)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def checksum(mode: str) -> float:  # only a sum is kept: no output outlives its render
        pred = model(inp, coord, cell) if mode == "forward" else predict(model, inp, coord, cell)
        return float(pred.double().sum())

    with torch.no_grad():
        timings = best_of({mode: lambda mode=mode: checksum(mode) for mode in modes}, repeats)
    best = {mode: t.seconds for mode, t in timings.items()}
    checksums = {mode: t.result for mode, t in timings.items()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({mode: {"mode": mode, "seconds": best[mode], "mp_per_s": out_size[0] * out_size[1] / best[mode] / 1e6,
                      "peak_rss_mib": peak, "rss_after_load_mib": rss_before, "checksum": checksums[mode]}
               for mode in modes})


def measure(modes: tuple[str, ...], size, scale: int, threads: int, repeats: int) -> dict:
    """``render_once`` in a fresh child process; a child that dies without a result ends the run, not hangs it."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=render_once, args=(modes, size, scale, threads, repeats, queue))
    child.start()
    while True:
        try:
            result = queue.get(timeout=1)
            break
        except Empty:
            if not child.is_alive() and queue.empty():  # a result put before exiting is in the pipe already
                raise SystemExit(f"query_speed.py: error: the {'/'.join(modes)} process ended without a result "
                                 f"(exit code {child.exitcode})") from None
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
    print("| case | mode | seconds | output MP/s | peak RSS (MiB) | RSS after load (MiB) |")
    print("|---|---|---|---|---|---|")
    results = []
    for size, scale in CASES:
        row = {}
        for modes in PROCESSES:
            row.update(measure(modes, size, scale, args.threads, args.repeats))
        for mode in MODES:
            r = row[mode]
            print(f"| {size[0]}x{size[1]} -> x{scale} | {mode} | {r['seconds']:.2f} | {r['mp_per_s']:.4f} | "
                  f"{r['peak_rss_mib']:.0f} | {r['rss_after_load_mib']:.0f} |", flush=True)
        reference = row["reference"]
        agree = max(abs(row[m]["checksum"] - reference["checksum"]) / abs(reference["checksum"]) for m in MODES)
        ratios = {m: row[m]["mp_per_s"] / reference["mp_per_s"] for m in ("fast", "forward")}
        print(f"| {size[0]}x{size[1]} -> x{scale} | **speed-up** | fast **{ratios['fast']:.2f}x**, forward "
              f"**{ratios['forward']:.2f}x** | | checksums agree to {agree:.1e} | |", flush=True)
        results.append({"size": size, "scale": scale, "ratios": ratios, **row})
    if args.json:
        write_text(args.json, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    run_script(main)
